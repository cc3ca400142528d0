// Fleet page: GPUs running by cloud/region/capacity, utilization over time and per instance, idle GPUs.
"use strict";
(() => {
  const { get, getAll, dec, fmt, $, fillTable, show, plot, poll } = gpb;
  const BUCKETS = 12;
  const BUCKET_MS = 5 * 60 * 1000;

  function byPlace(instances) {
    const groups = new Map();
    for (const i of instances) {
      const key = [i.provider, i.region, i.capacity_type].join("\u0000");
      const g = groups.get(key) || { cloud: i.provider, region: i.region, capacity: i.capacity_type, instances: 0, gpus: 0 };
      g.instances += 1;
      g.gpus += i.gpus;
      groups.set(key, g);
    }
    return [...groups.values()].sort((a, b) => b.gpus - a.gpus || a.cloud.localeCompare(b.cloud) || a.region.localeCompare(b.region) || a.capacity.localeCompare(b.capacity));
  }

  // Buckets end at the server's "now" (the last-hour summary's end), so a browser clock that is off
  // does not shift them.
  async function utilizationSeries(serverNow) {
    const end = Date.parse(serverNow);
    const windows = [];
    for (let k = BUCKETS - 1; k >= 0; k--) {
      const stop = new Date(end - k * BUCKET_MS);
      windows.push([new Date(stop.getTime() - BUCKET_MS), stop]);
    }
    const answers = await Promise.all(windows.map(([s, e]) =>
      get(`/v1/utilization/summary?group_by=org&start=${encodeURIComponent(s.toISOString())}&end=${encodeURIComponent(e.toISOString())}`)));
    return windows.map(([, e], k) => {
      const g = answers[k].groups[0];
      return { at: e.toISOString(), avg: g ? dec.toNumber(dec.parse(g.avg_gpu_util_pct)) : null, p95: g && g.p95_gpu_util_pct ? dec.toNumber(dec.parse(g.p95_gpu_util_pct)) : null };
    });
  }

  // Rows are the running instances, columns the server's 5-minute buckets of the last hour.
  function drawHeatmap(series) {
    const times = series.length ? series[0].buckets.map((b) => new Date(b.at)) : [];
    plot("heatmap", [{
      type: "heatmap", zmin: 0, zmax: 100, colorscale: "Viridis", hoverongaps: false,
      x: times, y: series.map((i) => `${i.id} · ${i.provider}/${i.region}`),
      z: series.map((i) => i.buckets.map((b) => b.gpu_util_pct === null ? null : dec.toNumber(dec.parse(b.gpu_util_pct)))),
      colorbar: { title: { text: "%" } },
    }], { margin: { l: 220, r: 12, t: 8, b: 40 }, yaxis: { automargin: true } });
  }

  function idleQuery() {
    const threshold = $("#idle-threshold").value || "10";
    const minutes = $("#idle-minutes").value || "30";
    return `/v1/utilization/idle?threshold_pct=${encodeURIComponent(threshold)}&minutes=${encodeURIComponent(minutes)}`;
  }

  async function render() {
    const [instances, hour, heat, idle] = await Promise.all([
      getAll("/v1/instances?state=running&limit=500"),
      get("/v1/utilization/summary?group_by=org"),
      getAll("/v1/utilization/instances?bucket_seconds=300&limit=500"),
      get(idleQuery()),
    ]);
    const series = await utilizationSeries(hour.end);
    const gpus = instances.reduce((sum, i) => sum + i.gpus, 0);
    $("[data-testid=gpus-running]").textContent = fmt.int(gpus);
    $("[data-testid=instances-running]").textContent = fmt.int(instances.length);
    $("[data-testid=util-hour]").textContent = hour.groups.length ? fmt.pct(hour.groups[0].avg_gpu_util_pct) : "no samples";

    const places = byPlace(instances);
    show("[data-testid=fleet-empty]", places.length === 0);
    fillTable("[data-testid=by-place]", places.map((g) => [g.cloud, g.region, g.capacity, { text: fmt.int(g.instances), class: "num" }, { text: fmt.int(g.gpus), class: "num" }]));

    const hasSamples = series.some((p) => p.avg !== null);
    show("[data-testid=util-empty]", !hasSamples);
    show("#util-chart", hasSamples);
    if (hasSamples) {
      plot("util-chart", [
        { type: "scatter", mode: "lines+markers", name: "mean", x: series.map((p) => new Date(p.at)), y: series.map((p) => p.avg), connectgaps: false },
        { type: "scatter", mode: "lines", name: "p95", x: series.map((p) => new Date(p.at)), y: series.map((p) => p.p95), line: { dash: "dot" } },
      ], { yaxis: { range: [0, 100], title: { text: "GPU utilization %" } }, legend: { orientation: "h" } });
    }
    show("#heatmap", heat.length > 0);
    if (heat.length) drawHeatmap(heat);

    // The idle rule as the server applied it (its echo, not the form's text).
    $("[data-testid=idle-rule]").textContent =
      `Every GPU sample in the ${fmt.int(idle.minutes)} minutes up to ${fmt.time(idle.at)} below ${fmt.num(idle.threshold_pct, 2)} %.`;
    const silent = idle.no_recent_samples;
    show("[data-testid=idle-silent]", silent.length > 0);
    $("[data-testid=idle-silent]").textContent = silent.length
      ? `Not counted (no samples in those ${fmt.int(idle.minutes)} minutes): ${silent.map((i) => i.id).join(", ")}.`
      : "";
    show("[data-testid=idle-empty]", idle.items.length === 0);
    $("[data-testid=idle-gpus]").textContent = fmt.int(idle.idle_gpus);
    const rows = idle.items.map((i) => [i.id, `${i.provider} / ${i.region}`, i.capacity_type + (i.commitment_id ? " (committed)" : ""),
      { text: fmt.int(i.gpus), class: "num" }, { text: fmt.pct(i.max_gpu_util_pct), class: "num" },
      fmt.time(i.idle_since), { text: fmt.usd(i.price_per_hour), class: "num", "data-testid": "idle-cost" }]);
    if (rows.length) rows.push([{ text: "Total", class: "total" }, "", "", { text: fmt.int(idle.idle_gpus), class: "num total" }, "", "", { text: fmt.usd(idle.idle_cost_per_hour), class: "num total", "data-testid": "idle-cost-total" }]);
    fillTable("[data-testid=idle]", rows);
  }

  const refresh = poll(render);
  for (const id of ["#idle-threshold", "#idle-minutes"]) $(id).addEventListener("change", refresh);
  $("#idle-form").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
})();
