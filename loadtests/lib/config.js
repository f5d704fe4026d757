// Run configuration shared by every scenario: one script serves every size.
//
// Environment (all optional except BASE_URL when not local):
//   BASE_URL      service root, e.g. http://127.0.0.1:8001 (default http://127.0.0.1:8001)
//   SIZE          smoke | 100 | 1000 | 10000 (default smoke): VUs, think time and thresholds
//   VUS           override the size's number of virtual users
//   DURATION      measured window, k6 duration syntax (default: the size's)
//   PREP          seconds before the measured window for per-VU preparation (default: scaled)
//   ACCOUNTS      JSON file of prepared accounts [{token, items}] (the runner writes one)
//   ACCOUNTS_URL  the same, one entry per GET <url>/<n> (the collector in a cluster, fed by
//                 loadtests/seed.py): VU n fetches entry n
//   THINK         seconds of think time between iterations (default: the size's)
//   MAX_FAILED, P95_MS, P99_MS, JOB_P95_MS, JOB_P99_MS  override the size's thresholds
//   SUMMARY_PATH  where handleSummary writes the JSON summary (default: none)
//   SUMMARY_STDOUT=json  also print the JSON summary on stdout, on one line after SUMMARY_MARKER
//                 (a k6-operator runner keeps no file: its log is collected instead)
//   REGISTER_SPREAD  seconds over which VUs without ACCOUNTS spread their registrations (VU n of
//                 N starts at (n-1)/N of it; default 0: all at once). With 10,000 VUs the two
//                 argon2 hashes per VU would otherwise arrive in one burst.
//   ITERATIONS    a fixed amount of work instead of a window: every VU runs this many
//                 iterations (per-vu-iterations), e.g. to compare a split run with an unsplit one
//   LABEL         free text copied into the summary (service, run number...)

// Thresholds per size, calibrated from runs on this project's 2-core machine (loadtests/README.md,
// "Thresholds": the runs, the margins). `failed` bounds http_req_failed over the measured window
// (the targets: under 0.1 % at 100 and 1,000 VUs, under 1 % at 10,000); `latency` gives
// [p95, p99] in ms per scenario for every request operation and time to first byte, and `job`
// the same for job_latency (submission to the poll that sees the job finished).
export const SIZES = {
  smoke: {
    vus: 5, duration: '10s', think: 0.2, failed: 0.01,
    latency: { crud: [2000, 4000], stream: [4000, 8000], jobs: [4000, 8000], read: [2000, 4000] },
    job: [30000, 60000],
  },
  100: {
    vus: 100, duration: '30s', think: 0.5, failed: 0.001,
    latency: { crud: [3000, 5000], stream: [8000, 12000], jobs: [8000, 12000], read: [8000, 12000] },
    job: [30000, 40000],
  },
  1000: {
    vus: 1000, duration: '30s', think: 2, failed: 0.001,
    latency: { crud: [5000, 8000], stream: [40000, 50000], jobs: [40000, 50000], read: [15000, 25000] },
    job: [60000, 90000],
  },
  10000: {
    vus: 10000, duration: '60s', think: 10, failed: 0.01,
    latency: { crud: [50000, 58000], stream: [50000, 58000], jobs: [50000, 58000], read: [50000, 58000] },
    job: [100000, 115000],
  },
};

export function durationSeconds(text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim());
  if (!match) throw new Error(`DURATION: not a duration: ${text}`);
  const factor = { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2] || 's'];
  return Number(match[1]) * factor;
}

export function settings(env = __ENV, scenario = 'crud') {
  const size = String(env.SIZE || 'smoke');
  const profile = SIZES[size];
  if (!profile) throw new Error(`SIZE: unknown ${size}; choose from ${Object.keys(SIZES)}`);
  const [p95, p99] = profile.latency[scenario] || profile.latency.crud;
  const vus = Number(env.VUS || profile.vus);
  const duration = durationSeconds(env.DURATION || profile.duration);
  // Account creation hashes a password (argon2) twice per VU; give it time before measuring
  // (a quarter more than the spread of the registrations, when they are spread).
  // With a prepared ACCOUNTS pool there is nothing to wait for.
  const prepared = Boolean(env.ACCOUNTS || env.ACCOUNTS_URL);
  const spread = prepared ? 0 : Number(env.REGISTER_SPREAD || 0);
  const fallback = prepared ? 2 : Math.max(5, spread > 0 ? Math.ceil(spread * 1.25) : Math.ceil(vus / 2));
  const prep = env.PREP !== undefined ? Number(env.PREP) : fallback;
  const think = env.THINK !== undefined ? Number(env.THINK) : profile.think;
  return {
    spread,
    iterations: Number(env.ITERATIONS || 0),
    summaryStdout: env.SUMMARY_STDOUT || '',
    size,
    vus,
    duration,
    prep,
    think,
    baseUrl: String(env.BASE_URL || 'http://127.0.0.1:8001').replace(/\/$/, ''),
    summaryPath: env.SUMMARY_PATH || '',
    label: env.LABEL || '',
    failed: Number(env.MAX_FAILED || profile.failed),
    p95: Number(env.P95_MS || p95),
    p99: Number(env.P99_MS || p99),
    jobP95: Number(env.JOB_P95_MS || profile.job[0]),
    jobP99: Number(env.JOB_P99_MS || profile.job[1]),
  };
}

// k6 options for a scenario: one constant-VU scenario covering the preparation and the
// measured window. Thresholds per size: failures over the measured window and p95/p99 per
// operation; `http_reqs{phase:main}` carries no limit worth failing on, it is there so the
// summary holds the measured window's request count.
// `overall: false` leaves the window's overall latency without limits (streams last seconds).
export function options(cfg, ops, extra = {}, { overall = true } = {}) {
  const thresholds = {
    'http_req_failed{phase:main}': [`rate<${cfg.failed}`],
    'http_req_duration{phase:main}': overall ? [`p(95)<${cfg.p95}`, `p(99)<${cfg.p99}`] : ['max>=0'],
    'http_reqs{phase:main}': ['count>=0'],
    checks: [`rate>${1 - cfg.failed}`],
    late_vus: ['count>=0'],
    prep_duration: ['max>=0'],
  };
  for (const op of ops) {
    thresholds[`http_req_duration{phase:main,op:${op}}`] = [`p(95)<${cfg.p95}`, `p(99)<${cfg.p99}`];
  }
  Object.assign(thresholds, extra);
  const main = cfg.iterations
    ? { executor: 'per-vu-iterations', vus: cfg.vus, iterations: cfg.iterations, maxDuration: `${cfg.prep + cfg.duration}s` }
    : { executor: 'constant-vus', vus: cfg.vus, duration: `${cfg.prep + cfg.duration}s` };
  return {
    scenarios: {
      main: { ...main, gracefulStop: String(__ENV.GRACEFUL_STOP || '10s') },
    },
    setupTimeout: '120s',
    teardownTimeout: '60s',
    thresholds,
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
    discardResponseBodies: false,
    noConnectionReuse: false,
    userAgent: 'loadtests-k6',
  };
}
