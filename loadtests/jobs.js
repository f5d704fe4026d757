// jobs: submit import_items / items_report jobs (alternating) and follow each to its end by
// polling GET /jobs/{id} as a polite client does (0.1 s, doubling up to POLL_MAX seconds);
// job_latency = submission to the first poll that sees it finished (so it overstates by up to
// one poll interval).
//   k6 run -e BASE_URL=http://127.0.0.1:8001 -e SIZE=100 loadtests/jobs.js
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { settings, options as makeOptions } from './lib/config.js';
import { API, TERMINAL, account as vuAccount, itemBody, phaseNow, tags, thinkTime, waitForStart } from './lib/api.js';
import { makeSummary } from './lib/summary.js';

const cfg = settings(__ENV, 'jobs');
const IMPORT_SIZE = Number(__ENV.IMPORT_SIZE || 50);
const POLL_FIRST = Number(__ENV.POLL_FIRST || 0.1);
const POLL_MAX = Number(__ENV.POLL_MAX || 2);
const JOB_TIMEOUT_SECONDS = Number(__ENV.JOB_TIMEOUT || 120);

const jobLatency = new Trend('job_latency', true);
const jobSucceeded = new Rate('job_succeeded');

export const options = makeOptions(
  cfg,
  ['submit', 'poll'],
  {
    job_latency: [`p(95)<${cfg.jobP95}`, `p(99)<${cfg.jobP99}`],
    'job_latency{kind:import_items}': ['p(95)>=0'],
    'job_latency{kind:items_report}': ['p(95)>=0'],
    job_succeeded: [`rate>${1 - cfg.failed}`],
  },
);
export const handleSummary = makeSummary('jobs', cfg);

export function setup() {
  return { runId: Date.now().toString(36), startAt: Date.now() + cfg.prep * 1000 };
}

let account = null;
let turn = 0;

export function jobRequest(n, size) {
  if (n % 2 === 0) {
    return { kind: 'import_items', items: Array.from({ length: size }, (_, i) => itemBody(i)) };
  }
  return { kind: 'items_report' };
}

export default function (data) {
  if (!account) {
    const began = Date.now();
    account = vuAccount(cfg, data.runId);
    waitForStart(data.startAt, began, cfg.think, cfg.baseUrl);
  }
  const phase = phaseNow(data.startAt);
  const body = jobRequest(turn++, IMPORT_SIZE);
  const started = Date.now();
  const submitted = http.post(`${cfg.baseUrl}${API}/jobs`, JSON.stringify(body), {
    headers: { ...account.headers, 'Content-Type': 'application/json' },
    tags: { ...tags(phase, 'submit'), name: 'POST /jobs' },
  });
  if (!check(submitted, { 'submit 202': (x) => x.status === 202 })) {
    thinkTime(cfg);
    return;
  }
  const id = submitted.json('id');
  let status = submitted.json('status');
  let pause = POLL_FIRST;
  while (!TERMINAL.includes(status) && Date.now() - started < JOB_TIMEOUT_SECONDS * 1000) {
    sleep(pause);
    pause = Math.min(pause * 2, POLL_MAX);
    const r = http.get(`${cfg.baseUrl}${API}/jobs/${id}`, {
      headers: account.headers,
      tags: { ...tags(phase, 'poll'), name: 'GET /jobs/{id}' },
    });
    if (!check(r, { 'poll 200': (x) => x.status === 200 })) break;
    status = r.json('status');
  }
  const ok = status === 'succeeded';
  check(null, { 'job succeeded': () => ok });
  if (phase === 'main') {
    jobSucceeded.add(ok);
    if (ok) jobLatency.add(Date.now() - started, { kind: body.kind });
  }
  thinkTime(cfg);
}
