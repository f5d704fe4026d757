// HTTP helpers: accounts, tokens, items, jobs. Every request carries `phase` and `op` tags so
// thresholds and the report can tell preparation from the measured window.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

// ACCOUNTS: a JSON file [{token, items: [ids]}] prepared by the runner (accounts and items
// written straight into the database, tokens signed with the server's key): VU n takes entry n.
// Without it every VU registers and logs in itself (two argon2 hashes each on the server).
const POOL = __ENV.ACCOUNTS ? new SharedArray('accounts', () => JSON.parse(open(__ENV.ACCOUNTS))) : null;

// Preparation (account, token, starting data) per VU, and the VUs that were not ready when the
// measured window opened (the window then runs with fewer VUs: raise PREP).
const prepDuration = new Trend('prep_duration', true);
const lateVus = new Counter('late_vus');

export const API = '/api/v1';
const PASSWORD = 'load-test-password-1';

export function tags(phase, op) {
  return { phase, op };
}

function json(body) {
  return { 'Content-Type': 'application/json' };
}

// ACCOUNTS_URL: the same entries served one by one (the load-test collector, filled by
// loadtests/seed.py in a cluster): VU n fetches <ACCOUNTS_URL>/n. n is exec.vu.idInTest, unique
// across the runners of a distributed test, so every VU of every runner gets its own account.
const ACCOUNTS_URL = String(__ENV.ACCOUNTS_URL || '').replace(/\/$/, '');

// This VU's account: {token, headers, items} from the ACCOUNTS pool or ACCOUNTS_URL, or a fresh one.
export function account(cfg, runId) {
  if (ACCOUNTS_URL) {
    const answer = http.get(`${ACCOUNTS_URL}/${exec.vu.idInTest}`, { tags: tags('prep', 'account') });
    if (!check(answer, { 'account 200': (r) => r.status === 200 })) {
      throw new Error(`account ${exec.vu.idInTest}: ${answer.status} ${String(answer.body).slice(0, 200)}`);
    }
    const entry = answer.json();
    return { token: entry.token, headers: { Authorization: `Bearer ${entry.token}` }, items: [...entry.items] };
  }
  if (POOL) {
    const entry = POOL[(exec.vu.idInTest - 1) % POOL.length];
    return { token: entry.token, headers: { Authorization: `Bearer ${entry.token}` }, items: [...entry.items] };
  }
  return newAccount(cfg, runId);
}

// A fresh account and its token for this VU. Two argon2 computations on the server (register,
// login): done once per VU, before the measured window.
// With REGISTER_SPREAD the VUs register one after the other over that many seconds, in the
// order of their test-wide number (exec.vu.idInTest is unique across k6-operator runners: each
// runner's execution segment gets its own share of the numbers), so N runners together still
// offer one even ramp.
export function newAccount(cfg, runId) {
  const vu = exec.vu.idInTest;
  if (cfg.spread > 0) sleep(((vu - 1) / cfg.vus) * cfg.spread);
  const email = `lt-${runId}-${vu}-${Math.floor(Math.random() * 1e9)}@example.com`;
  const created = http.post(
    `${cfg.baseUrl}${API}/users`,
    JSON.stringify({ email, password: PASSWORD, full_name: `Load ${vu}` }),
    { headers: json(), tags: tags('prep', 'register') },
  );
  if (!check(created, { 'register 201': (r) => r.status === 201 })) {
    throw new Error(`register: ${created.status} ${String(created.body).slice(0, 200)}`);
  }
  const login = http.post(
    `${cfg.baseUrl}${API}/auth/token`,
    { grant_type: 'password', username: email, password: PASSWORD },
    { tags: tags('prep', 'login') },
  );
  if (!check(login, { 'login 200': (r) => r.status === 200 })) {
    throw new Error(`login: ${login.status} ${String(login.body).slice(0, 200)}`);
  }
  const token = login.json('access_token');
  return { email, token, headers: { Authorization: `Bearer ${token}` }, items: [] };
}

export function itemBody(n) {
  return {
    name: `item ${n}`,
    description: 'made by the load test',
    price: Math.round(Math.random() * 100000) / 100,
    tags: n % 2 ? ['odd', 'load'] : ['even', 'load'],
  };
}

export function createItem(cfg, account, n, phase) {
  const answer = http.post(`${cfg.baseUrl}${API}/items`, JSON.stringify(itemBody(n)), {
    headers: { ...account.headers, ...json() },
    tags: tags(phase, 'create'),
  });
  check(answer, { 'create 201': (r) => r.status === 201 });
  return answer.status === 201 ? answer.json('id') : null;
}

// Before the measured window starts every VU waits for the common start time from setup(),
// then for a random part of one think time (`spread` seconds): in steady state each VU is
// somewhere in its cycle, so the window opens at the offered rate instead of with every VU's
// first request at the same instant (10,000 at once overflow the listen backlog).
// `began` is when the VU started preparing.
//
// With `baseUrl`, the VU first opens its connection at a random moment of the time left before
// the window (GET /healthz, a `prep` request): the window then starts with every VU holding its
// keep-alive connection, as held users do, instead of 10,000 connects in its first seconds.
export function waitForStart(startAt, began, spread = 0, baseUrl = '') {
  const now = Date.now();
  prepDuration.add(now - began);
  lateVus.add(now > startAt ? 1 : 0);
  if (baseUrl && startAt > now) {
    sleep((Math.random() * 0.8 * (startAt - now)) / 1000);
    http.get(`${baseUrl}/healthz`, { tags: { ...tags('prep', 'connect'), name: 'GET /healthz' } });
  }
  const wait = (startAt - Date.now()) / 1000 + Math.random() * spread;
  if (wait > 0) sleep(wait);
}

export function phaseNow(startAt) {
  return Date.now() >= startAt ? 'main' : 'prep';
}

export function thinkTime(cfg) {
  if (cfg.think > 0) sleep(cfg.think * (0.5 + Math.random()));
}

export const TERMINAL = ['succeeded', 'failed', 'cancelled'];
