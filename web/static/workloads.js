// Workloads page: every workload's state, placement and cost so far.
"use strict";
(() => {
  const { get, getAll, ApiError, fmt, el, $, fillTable, show, poll } = gpb;

  // Cost so far per workload, from the cost API over the window since the oldest listed workload.
  async function costs(workloads) {
    if (!workloads.length) return new Map();
    const start = workloads.map((w) => w.created_at).sort()[0];
    try {
      const answer = await get(`/v1/costs?group_by=workload&start=${encodeURIComponent(start)}`);
      return new Map(answer.groups.map((g) => [g.key, g.usd]));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null; // a server without the cost API
      throw error;
    }
  }

  async function render() {
    const state = $("#state").value;
    const workloads = await getAll("/v1/workloads?limit=200" + (state ? `&state=${encodeURIComponent(state)}` : ""), 5);
    const spent = await costs(workloads);
    show("[data-testid=workloads-empty]", workloads.length === 0);
    fillTable("[data-testid=workloads]", workloads.map((w) => {
      const p = w.placement;
      return [
        el("a", { href: `/workloads/${encodeURIComponent(w.id)}` }, w.name || w.id),
        w.project, el("span", { class: `badge state-${w.state}` }, w.state), `${w.nodes} × ${w.gpus_per_node}`,
        p ? p.cloud : "–", p ? p.region : "–", p ? p.capacity_type : w.capacity,
        { text: p ? fmt.usd(p.price_per_hour) : "–", class: "num" },
        { text: spent === null ? "n/a" : fmt.usd(spent.get(w.id) ?? "0"), class: "num", "data-testid": "cost-so-far" },
      ];
    }));
  }
  const refresh = poll(render);
  $("#state").addEventListener("change", refresh);
  $("#filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
})();
