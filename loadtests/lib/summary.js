// handleSummary: the whole k6 summary as JSON (to SUMMARY_PATH) plus a few lines on stdout.
// With SUMMARY_STDOUT=json the JSON also goes to stdout, on the line after SUMMARY_MARKER
// (loadtests/k8s_run.py reads it from a runner pod's log; loadtests/merge.py combines them).
export const SUMMARY_MARKER = '--- k6 summary json ---';

export function makeSummary(scenario, cfg) {
  return function handleSummary(data) {
    data.loadtest = {
      scenario,
      size: cfg.size,
      vus: cfg.vus,
      duration_s: cfg.duration,
      prep_s: cfg.prep,
      think_s: cfg.think,
      base_url: cfg.baseUrl,
      label: cfg.label,
    };
    let stdout = `${brief(scenario, cfg, data)}\n`;
    if (cfg.summaryStdout === 'json') stdout += `${SUMMARY_MARKER}\n${JSON.stringify(data)}\n`;
    const out = { stdout };
    if (cfg.summaryPath) out[cfg.summaryPath] = JSON.stringify(data, null, 1);
    return out;
  };
}

function brief(scenario, cfg, data) {
  const m = data.metrics;
  const reqs = m['http_reqs{phase:main}'];
  const dur = m['http_req_duration{phase:main}'];
  const failed = m['http_req_failed{phase:main}'];
  const lines = [`${scenario} ${cfg.label} size=${cfg.size} vus=${cfg.vus} window=${cfg.duration}s`];
  if (reqs) lines.push(`  requests in window: ${reqs.values.count} (${(reqs.values.count / cfg.duration).toFixed(1)}/s)`);
  if (dur) {
    const v = dur.values;
    lines.push(`  latency ms: p50 ${v.med.toFixed(1)} p95 ${v['p(95)'].toFixed(1)} p99 ${v['p(99)'].toFixed(1)}`);
  }
  if (failed) lines.push(`  failed: ${(100 * failed.values.rate).toFixed(2)}%`);
  const crossed = [];
  for (const [name, metric] of Object.entries(m)) {
    for (const [rule, result] of Object.entries(metric.thresholds || {})) {
      if (!result.ok) crossed.push(`${name} ${rule}`);
    }
  }
  lines.push(crossed.length ? `  thresholds crossed: ${crossed.join('; ')}` : '  thresholds: all met');
  return lines.join('\n');
}
