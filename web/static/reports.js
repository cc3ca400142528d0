// Reports page: the stored nightly cost reports with their headline figures and links to HTML and CSV.
"use strict";
(() => {
  const { getAll, ApiError, el, $, fmt, dec, fillTable, show, poll } = gpb;

  function change(pct) {
    if (pct === null || pct === undefined) return "–";
    const n = dec.parse(pct);
    return (n > 0n ? "+" : "") + fmt.pct(n);
  }

  async function render() {
    let reports = [];
    try {
      reports = await getAll("/v1/reports?limit=100", 4); // the newest 400 days at most
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error; // 404: a server without reports
    }
    show("[data-testid=reports-empty]", reports.length === 0);
    fillTable("[data-testid=reports]", reports.map((r) => [
      { text: r.day, "data-testid": "report-day" },
      { text: fmt.usd(r.spend_usd), class: "num" },
      { text: fmt.num(r.gpu_hours, 3), class: "num" },
      { text: fmt.usd(r.savings_usd), class: "num" },
      { text: fmt.usd(r.commitment_waste_usd), class: "num" },
      { text: change(r.change_vs_previous_day_pct), class: "num" },
      { text: fmt.int(r.anomalies), class: "num" },
      el("span", {},
        el("a", { href: r.links.html_url, "data-testid": "report-html" }, "HTML"), " · ",
        el("a", { href: r.links.csv_url, "data-testid": "report-csv" }, "CSV")),
    ]));
  }
  poll(render);
})();
