// read: the same one-row read, on the template (GET /api/v1/items/{id} with a bearer token) or
// on a bare app (GET /bare/items/{id}, no auth, no middleware): the template's cost as a ratio
// of throughputs at saturation.
// The runner creates the item and passes ITEM_ID (and TOKEN for the template).
//   k6 run -e BASE_URL=... -e TARGET=template|bare -e ITEM_ID=... -e TOKEN=... loadtests/read.js
import http from 'k6/http';
import { check } from 'k6';
import { settings, options as makeOptions } from './lib/config.js';
import { tags, thinkTime } from './lib/api.js';
import { makeSummary } from './lib/summary.js';

// No think time unless THINK is given: every VU sends its next read as soon as the answer is
// in, so the server runs saturated and requests per second are its throughput (the template /
// bare ratio is a ratio of throughputs; with think time both would just serve the offered rate).
const cfg = { ...settings(__ENV, 'read'), prep: Number(__ENV.PREP || 0), think: Number(__ENV.THINK || 0) };
const TARGET = __ENV.TARGET || 'template';
const ITEM_ID = __ENV.ITEM_ID || '';
const TOKEN = __ENV.TOKEN || '';

export const options = makeOptions(cfg, ['read']);
export const handleSummary = makeSummary('read', { ...cfg, label: `${cfg.label} ${TARGET}`.trim() });

export function setup() {
  if (!ITEM_ID) throw new Error('ITEM_ID is required');
  if (TARGET === 'template' && !TOKEN) throw new Error('TOKEN is required for TARGET=template');
  return { startAt: Date.now() };
}

export function readUrl(base, target, id) {
  return target === 'bare' ? `${base}/bare/items/${id}` : `${base}/api/v1/items/${id}`;
}

const url = readUrl(cfg.baseUrl, TARGET, ITEM_ID);
const params = {
  headers: TARGET === 'bare' ? {} : { Authorization: `Bearer ${TOKEN}` },
  tags: { ...tags('main', 'read'), name: 'GET one item' },
};

export default function () {
  const r = http.get(url, params);
  check(r, { 'read 200': (x) => x.status === 200 && x.json('id') === ITEM_ID });
  thinkTime(cfg);
}
