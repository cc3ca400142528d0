// Offers page: the cheapest offer per cloud, region and capacity type now, and one offer's price history.
"use strict";
(() => {
  const { get, dec, fmt, el, $, fillTable, show, plot, poll } = gpb;

  function cheapestPerPlace(offers) {
    // The API answers cheapest per GPU-hour first, so the first offer seen for a place is its cheapest.
    const seen = new Map();
    for (const o of offers) {
      const key = [o.cloud, o.region, o.capacity_type].join("\u0000");
      if (!seen.has(key)) seen.set(key, o);
    }
    return [...seen.values()];
  }

  async function history(o) {
    const q = new URLSearchParams({ cloud: o.cloud, instance_type: o.instance_type, capacity: o.capacity_type, region: o.region });
    const answer = await get(`/v1/offers/history?${q}`);
    $("[data-testid=history-title]").textContent = `${o.cloud} ${o.region} ${o.instance_type} ${o.capacity_type}: ${answer.count} stored price(s), last 30 days`;
    plot("history-chart", [{
      type: "scatter", mode: "lines+markers", line: { shape: "hv" },
      x: answer.points.map((p) => new Date(p.observed_at)), y: answer.points.map((p) => dec.toNumber(dec.parse(p.price_per_gpu_hour))),
    }], { yaxis: { title: { text: "$ per GPU-hour" } } });
  }

  async function render() {
    const q = new URLSearchParams({ limit: "1000" });
    const gpu = $("#gpu").value.trim();
    if (gpu) q.set("gpu", gpu);
    if ($("#capacity").value) q.set("capacity", $("#capacity").value);
    const answer = await get(`/v1/offers?${q}`);
    const rows = cheapestPerPlace(answer.offers);
    show("[data-testid=offers-empty]", rows.length === 0);
    fillTable("[data-testid=offers]", rows.map((o) => [
      o.cloud, o.region, o.capacity_type, o.instance_type, { text: fmt.int(o.accelerator_count), class: "num" },
      { text: fmt.usd(o.price_per_gpu_hour, 4), class: "num" }, { text: fmt.usd(o.price_per_hour, 4), class: "num" },
      { text: fmt.age(o.price_age_seconds) + (o.stale ? " (stale)" : ""), title: o.source },
      el("button", { type: "button", onclick: () => history(o).catch((e) => gpb.status("Could not load history: " + e.message, true)) }, "history"),
    ]));
  }
  const refresh = poll(render);
  $("#offer-form").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
})();
