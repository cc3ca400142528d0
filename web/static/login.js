// Sign-in page: warn before submitting when the browser will refuse the Secure session cookie.
"use strict";
if (!window.isSecureContext) document.getElementById("insecure").hidden = false;
