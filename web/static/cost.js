// Cost page: burn rate, spend today and this month against budget, savings, waste, spend by project.
"use strict";
(() => {
  const { get, ApiError, dec, fmt, $, fillTable, show, plot, poll } = gpb;

  function percentOf(part, whole) {
    const p = dec.parse(part);
    const w = dec.parse(whole);
    if (p === null || w === null || w === 0n) return "–";
    return dec.format((p * 100n * 10n ** 12n) / w, 1) + " %";
  }

  async function render() {
    let summary;
    let byCapacity;
    try {
      [summary, byCapacity] = await Promise.all([get("/v1/costs/summary"), get("/v1/costs?group_by=capacity_type")]);
    } catch (error) {
      // A 404 here means a server without the cost API (a key sees its own org's costs, never a 404).
      if (error instanceof ApiError && error.status === 404) { show("[data-testid=cost-unavailable]", true); return; }
      throw error;
    }
    show("[data-testid=cost-unavailable]", false);
    $("[data-testid=burn-rate]").textContent = fmt.usd(summary.burn_rate_usd_per_hour) + " /h";
    $("[data-testid=spend-today]").textContent = fmt.usd(summary.spend_today_usd);
    $("[data-testid=spend-mtd]").textContent = fmt.usd(summary.spend_month_to_date_usd);
    $("[data-testid=budget]").textContent = summary.budget_usd_per_month === null
      ? "no monthly budget: set max_usd_per_month on a project"
      : `of ${fmt.usd(summary.budget_usd_per_month)} budget (${percentOf(summary.spend_month_to_date_usd, summary.budget_usd_per_month)})`;
    $("[data-testid=savings]").textContent = fmt.usd(summary.savings_vs_on_demand_usd);
    $("[data-testid=waste]").textContent = fmt.usd(summary.commitment_waste_usd);

    show("[data-testid=projects-empty]", summary.projects.length === 0);
    fillTable("[data-testid=projects]", summary.projects.map((p) => [
      p.name ?? "(commitments for no project)",
      { text: fmt.usd(p.spend_today_usd), class: "num" },
      { text: fmt.usd(p.spend_month_to_date_usd), class: "num" },
      { text: p.max_usd_per_month === null ? "none" : fmt.usd(p.max_usd_per_month), class: "num" },
      { text: p.max_usd_per_month === null ? "–" : percentOf(p.spend_month_to_date_usd, p.max_usd_per_month), class: "num" },
    ]));
    fillTable("[data-testid=by-capacity]", byCapacity.groups.map((g) => [
      g.key ?? "–", { text: fmt.num(g.gpu_hours, 2), class: "num" }, { text: fmt.usd(g.usd), class: "num" },
      { text: g.savings_usd === null ? "–" : fmt.usd(g.savings_usd), class: "num" },
    ]));
    show("#capacity-chart", byCapacity.groups.length > 0);
    if (byCapacity.groups.length) {
      plot("capacity-chart", [{ type: "bar", x: byCapacity.groups.map((g) => g.key ?? "–"), y: byCapacity.groups.map((g) => dec.toNumber(dec.parse(g.usd))) }],
        { yaxis: { title: { text: "USD this month" } } });
    }
  }
  poll(render);
})();
