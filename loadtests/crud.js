// crud: each VU owns an account and a few items, then mixes reads 70%, list 10%, create 10%,
// update 5%, delete 5% with think time in between.
//   k6 run -e BASE_URL=http://127.0.0.1:8001 -e SIZE=100 loadtests/crud.js
import http from 'k6/http';
import { check } from 'k6';
import { settings, options as makeOptions } from './lib/config.js';
import { API, account as vuAccount, createItem, phaseNow, tags, thinkTime, waitForStart } from './lib/api.js';
import { makeSummary } from './lib/summary.js';

const cfg = settings(__ENV, 'crud');
const OPS = ['read', 'list', 'create', 'update', 'delete'];
const START_ITEMS = 5;

export const options = makeOptions(cfg, OPS);
export const handleSummary = makeSummary('crud', cfg);

export function setup() {
  return { runId: Date.now().toString(36), startAt: Date.now() + cfg.prep * 1000 };
}

// Per-VU state (each VU has its own JS runtime).
let account = null;
const ids = [];
let made = 0;

export function pick(roll) {
  if (roll < 0.7) return 'read';
  if (roll < 0.8) return 'list';
  if (roll < 0.9) return 'create';
  if (roll < 0.95) return 'update';
  return 'delete';
}

function params(phase, op, name, withJson = false) {
  const headers = withJson ? { ...account.headers, 'Content-Type': 'application/json' } : account.headers;
  return { headers, tags: { ...tags(phase, op), name } };
}

function anyId() {
  return ids[Math.floor(Math.random() * ids.length)];
}

export default function (data) {
  if (!account) {
    const began = Date.now();
    account = vuAccount(cfg, data.runId);
    ids.push(...account.items);
    for (let i = ids.length; i < START_ITEMS; i++) {
      const id = createItem(cfg, account, made++, 'prep');
      if (id) ids.push(id);
    }
    waitForStart(data.startAt, began, cfg.think, cfg.baseUrl);
  }
  const phase = phaseNow(data.startAt);
  let op = pick(Math.random());
  if (ids.length <= 1 && op === 'delete') op = 'create';
  if (ids.length === 0 && op !== 'list') op = 'create';
  const items = `${cfg.baseUrl}${API}/items`;
  if (op === 'read') {
    const r = http.get(`${items}/${anyId()}`, params(phase, op, 'GET /items/{id}'));
    check(r, { 'read 200': (x) => x.status === 200 });
  } else if (op === 'list') {
    const r = http.get(`${items}?limit=20`, params(phase, op, 'GET /items'));
    check(r, { 'list 200': (x) => x.status === 200 });
  } else if (op === 'create') {
    const r = http.post(
      items,
      JSON.stringify({ name: `item ${made++}`, price: 1.5, tags: ['load'] }),
      params(phase, op, 'POST /items', true),
    );
    if (check(r, { 'create 201': (x) => x.status === 201 })) ids.push(r.json('id'));
  } else if (op === 'update') {
    const r = http.patch(
      `${items}/${anyId()}`,
      JSON.stringify({ price: Math.round(Math.random() * 10000) / 100 }),
      params(phase, op, 'PATCH /items/{id}', true),
    );
    check(r, { 'update 200': (x) => x.status === 200 });
  } else {
    const index = Math.floor(Math.random() * ids.length);
    const [id] = ids.splice(index, 1);
    const r = http.del(`${items}/${id}`, null, params(phase, op, 'DELETE /items/{id}'));
    check(r, { 'delete 204': (x) => x.status === 204 });
  }
  thinkTime(cfg);
}
