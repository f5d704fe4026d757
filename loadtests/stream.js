// stream: long responses. Each iteration is either a JSON Lines export of the VU's items or an
// SSE subscriber following one job (items_report by default, SSE_JOB=import_items for progress
// events) from submission to its terminal event. Time to first byte and total duration are
// separate metrics: export_ttfb / export_duration, sse_ttfb / sse_duration.
//   k6 run -e BASE_URL=http://127.0.0.1:8001 -e SIZE=100 loadtests/stream.js
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { settings, options as makeOptions } from './lib/config.js';
import { API, account as vuAccount, createItem, itemBody, phaseNow, tags, thinkTime, waitForStart } from './lib/api.js';
import { makeSummary } from './lib/summary.js';

const cfg = settings(__ENV, 'stream');
const EXPORT_ITEMS = Number(__ENV.EXPORT_ITEMS || 10);
const SSE_JOB = __ENV.SSE_JOB || 'items_report';
const SSE_SHARE = Number(__ENV.SSE_SHARE || 0.5);
const STREAM_TIMEOUT = __ENV.STREAM_TIMEOUT || '120s';

const exportTtfb = new Trend('export_ttfb', true);
const exportDuration = new Trend('export_duration', true);
const sseTtfb = new Trend('sse_ttfb', true);
const sseDuration = new Trend('sse_duration', true);
const sseComplete = new Rate('sse_complete');

export const options = makeOptions(
  cfg,
  ['export', 'submit'],
  {
    export_ttfb: [`p(95)<${cfg.p95}`, `p(99)<${cfg.p99}`],
    sse_ttfb: [`p(95)<${cfg.p95}`, `p(99)<${cfg.p99}`],
    export_duration: ['p(95)>=0'],
    sse_duration: ['p(95)>=0'],
    sse_complete: [`rate>${1 - cfg.failed}`],
  },
  { overall: false },
);
export const handleSummary = makeSummary('stream', cfg);

export function setup() {
  return { runId: Date.now().toString(36), startAt: Date.now() + cfg.prep * 1000 };
}

let account = null;

// The kinds of events in an SSE body, in order ("progress", "succeeded", ...).
export function eventKinds(body) {
  const kinds = [];
  for (const line of String(body || '').split('\n')) {
    if (line.startsWith('event:')) kinds.push(line.slice(6).trim());
  }
  return kinds;
}

function jobBody() {
  if (SSE_JOB === 'import_items') {
    return { kind: 'import_items', items: Array.from({ length: 20 }, (_, n) => itemBody(n)) };
  }
  return { kind: 'items_report', tag: 'load' };
}

function exportOnce(phase) {
  const r = http.get(`${cfg.baseUrl}${API}/items/export`, {
    headers: account.headers,
    tags: { ...tags(phase, 'export'), name: 'GET /items/export' },
    timeout: STREAM_TIMEOUT,
  });
  const ok = check(r, {
    'export 200': (x) => x.status === 200,
    'export has lines': (x) => String(x.body).split('\n').filter((l) => l).length >= 1,
  });
  if (ok && phase === 'main') {
    exportTtfb.add(r.timings.waiting);
    exportDuration.add(r.timings.duration);
  }
}

function subscribeOnce(phase) {
  const submitted = http.post(`${cfg.baseUrl}${API}/jobs`, JSON.stringify(jobBody()), {
    headers: { ...account.headers, 'Content-Type': 'application/json' },
    tags: { ...tags(phase, 'submit'), name: 'POST /jobs' },
  });
  if (!check(submitted, { 'submit 202': (x) => x.status === 202 })) return;
  const id = submitted.json('id');
  // k6 has no EventSource: a plain GET reads the stream until the server ends it (terminal job).
  const r = http.get(`${cfg.baseUrl}${API}/jobs/${id}/events`, {
    headers: { ...account.headers, Accept: 'text/event-stream' },
    tags: { ...tags(phase, 'events'), name: 'GET /jobs/{id}/events' },
    timeout: STREAM_TIMEOUT,
  });
  const kinds = eventKinds(r.body);
  const complete = r.status === 200 && kinds.length > 0 && kinds[kinds.length - 1] === 'succeeded';
  check(r, { 'events 200': (x) => x.status === 200, 'stream ends succeeded': () => complete });
  if (phase === 'main') {
    sseComplete.add(complete);
    if (r.status === 200) {
      sseTtfb.add(r.timings.waiting);
      sseDuration.add(r.timings.duration);
    }
  }
}

export default function (data) {
  if (!account) {
    const began = Date.now();
    account = vuAccount(cfg, data.runId);
    for (let i = account.items.length; i < EXPORT_ITEMS; i++) createItem(cfg, account, i, 'prep');
    waitForStart(data.startAt, began, cfg.think, cfg.baseUrl);
  }
  const phase = phaseNow(data.startAt);
  if (Math.random() < SSE_SHARE) subscribeOnce(phase);
  else exportOnce(phase);
  thinkTime(cfg);
}
