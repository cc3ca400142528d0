// One workload: where it runs and why (the placement explanation), its cost so far, its events.
"use strict";
(() => {
  const { get, ApiError, fmt, el, $, fillTable, show, poll } = gpb;
  const id = document.body.dataset.workloadId;
  const base = `/v1/workloads/${encodeURIComponent(id)}`;
  const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

  function candidate(c) { return `${c.cloud} / ${c.zone || c.region}${c.instance_type ? " · " + c.instance_type : ""}`; }

  async function allEvents() {
    const events = [];
    let after = 0;
    for (let page = 0; page < 20; page++) {
      const answer = await get(`${base}/events?after=${after}&limit=1000`);
      events.push(...answer.items);
      if (answer.next_after === null) break;
      after = answer.next_after;
    }
    return events;
  }

  async function cost(w) {
    try {
      const answer = await get(`/v1/costs?group_by=workload&start=${encodeURIComponent(w.created_at)}`);
      const mine = answer.groups.find((g) => g.key === w.id);
      return fmt.usd(mine ? mine.usd : "0");
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return "n/a";
      throw error;
    }
  }

  async function render() {
    let w;
    try {
      w = await get(base);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) { show("[data-testid=workload-missing]", true); show("#workload-body", false); return; }
      throw error;
    }
    const [explanation, events, spent] = await Promise.all([get(`${base}/explain?limit=10`), allEvents(), cost(w)]);
    const p = w.placement;
    $("[data-testid=name]").textContent = w.name || "–";
    $("[data-testid=state]").replaceChildren(el("span", { class: `badge state-${w.state}` }, w.state));
    $("[data-testid=project]").textContent = w.project;
    $("[data-testid=gpus]").textContent = `${w.nodes} × ${w.gpus_per_node} ${w.gpu_types.join(" or ")}`;
    $("[data-testid=placement]").textContent = p ? `${p.cloud} / ${p.zone || p.region} · ${p.capacity_type}${p.instance_type ? " · " + p.instance_type : ""}` : "not placed";
    $("[data-testid=price]").textContent = p ? fmt.usd(p.price_per_hour) + " per instance-hour" : "–";
    $("[data-testid=cost]").textContent = spent;
    $("[data-testid=wait-reason]").textContent = w.wait_reason || "–";
    const cancel = $("#cancel-form");
    if (cancel) cancel.hidden = FINAL.has(w.state);

    $("[data-testid=decision]").textContent = explanation.decision === "place" && explanation.chosen
      ? `Best now: ${candidate(explanation.chosen)} (${explanation.chosen.capacity_type}), expected ${fmt.usd(explanation.chosen.expected_total_usd)} in total.`
      : `Would wait: ${explanation.wait_reason || "no candidate passes every filter"}.`;
    fillTable("[data-testid=scored]", explanation.scored.map((c) => [candidate(c), c.capacity_type,
      { text: fmt.usd(c.price_per_hour), class: "num" }, { text: fmt.usd(c.expected_total_usd), class: "num" }]));
    const example = new Map();
    for (const r of explanation.rejected) if (!example.has(r.filter)) example.set(r.filter, r.reason);
    fillTable("[data-testid=rejections]", Object.entries(explanation.rejections_by_filter)
      .sort((a, b) => b[1] - a[1])
      .map(([filter, n]) => [filter, { text: fmt.int(n), class: "num" }, example.get(filter) || "–"]));

    const list = $("[data-testid=events]");
    list.replaceChildren(...events.map((e) => {
      const cls = e.kind.startsWith("preempt") ? "preemption" : e.kind.startsWith("migrat") ? "migration" : "";
      const states = e.from_state || e.to_state ? ` (${e.from_state || "–"} → ${e.to_state || "–"})` : "";
      return el("li", { class: cls, "data-kind": e.kind }, el("time", { datetime: e.at }, fmt.time(e.at)),
        el("strong", {}, e.kind), states, e.message ? " — " + e.message : "");
    }));
    if (!events.length) list.replaceChildren(el("li", {}, "No events yet."));
  }
  poll(render);
})();
