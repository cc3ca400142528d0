// Commitments page: committed vs used GPU-hours per contract, and the idle reserved capacity's cost.
"use strict";
(() => {
  const { get, getAll, dec, fmt, $, fillTable, show, plot, poll } = gpb;

  async function render() {
    const commitments = await getAll("/v1/commitments?limit=500");
    const usages = await Promise.all(commitments.map((c) => get(`/v1/commitments/${encodeURIComponent(c.id)}/usage`)));
    let committed = 0n;
    let used = 0n;
    let waste = 0n;
    const rows = commitments.map((c, k) => {
      const t = usages[k].totals;
      committed = dec.add(committed, dec.parse(t.committed_gpu_hours));
      used = dec.add(used, dec.parse(t.used_gpu_hours));
      waste = dec.add(waste, dec.parse(t.idle_waste_usd));
      return [
        c.name || c.id, `${c.provider} / ${c.region}`, `${c.gpu_count} × ${c.accelerator}`,
        `${c.starts_at.slice(0, 10)} → ${c.ends_at.slice(0, 10)}`,
        { text: fmt.usd(c.price_per_gpu_hour, 4), class: "num" },
        { text: fmt.num(t.committed_gpu_hours, 2), class: "num" }, { text: fmt.num(t.used_gpu_hours, 2), class: "num" },
        { text: t.utilization === null ? "–" : fmt.pct(dec.parse(t.utilization) * 100n, 1), class: "num" },
        { text: fmt.usd(t.idle_waste_usd), class: "num" },
      ];
    });
    $("[data-testid=committed-total]").textContent = fmt.num(committed, 2);
    $("[data-testid=used-total]").textContent = fmt.num(used, 2);
    $("[data-testid=waste-total]").textContent = fmt.usd(waste);
    show("[data-testid=commitments-empty]", commitments.length === 0);
    fillTable("[data-testid=commitments]", rows);
    show("#commitments-chart", commitments.length > 0);
    if (commitments.length) {
      const names = commitments.map((c) => c.name || c.id);
      plot("commitments-chart", [
        { type: "bar", name: "committed", x: names, y: usages.map((u) => dec.toNumber(dec.parse(u.totals.committed_gpu_hours))) },
        { type: "bar", name: "used", x: names, y: usages.map((u) => dec.toNumber(dec.parse(u.totals.used_gpu_hours))) },
      ], { barmode: "group", yaxis: { title: { text: "GPU-hours" } }, legend: { orientation: "h" } });
    }
  }
  poll(render);
})();
