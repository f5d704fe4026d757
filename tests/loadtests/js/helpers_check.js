// Run by test_k6_scripts.py with `k6 run` (1 VU, 1 iteration, no server needed): the scripts'
// pure helpers. A failed expectation aborts the test, which makes k6 exit non-zero (a plain
// exception would only end the iteration, with exit code 0).
import { pick } from '../../../loadtests/crud.js';
import { eventKinds } from '../../../loadtests/stream.js';
import { jobRequest } from '../../../loadtests/jobs.js';
import { readUrl } from '../../../loadtests/read.js';
import { durationSeconds, settings } from '../../../loadtests/lib/config.js';
import exec from 'k6/execution';

export const options = { vus: 1, iterations: 1 };

function expect(condition, message) {
  if (!condition) exec.test.abort(`expectation failed: ${message}`);
}

export default function () {
  const counts = { read: 0, list: 0, create: 0, update: 0, delete: 0 };
  for (let i = 0; i < 1000; i++) counts[pick((i + 0.5) / 1000)] += 1;
  expect(counts.read === 700 && counts.list === 100 && counts.create === 100, JSON.stringify(counts));
  expect(counts.update === 50 && counts.delete === 50, JSON.stringify(counts));

  const body = ': heartbeat\n\nevent: progress\nid: 1\ndata: {}\n\nevent: succeeded\nid: 3\ndata: {}\n\n';
  expect(JSON.stringify(eventKinds(body)) === '["progress","succeeded"]', eventKinds(body));
  expect(eventKinds('').length === 0, 'empty body has no events');

  const first = jobRequest(0, 3);
  expect(first.kind === 'import_items' && first.items.length === 3, JSON.stringify(first));
  expect(jobRequest(1, 3).kind === 'items_report', 'odd turns report');

  expect(readUrl('http://h', 'bare', 'x') === 'http://h/bare/items/x', 'bare url');
  expect(readUrl('http://h', 'template', 'x') === 'http://h/api/v1/items/x', 'template url');

  expect(durationSeconds('30s') === 30 && durationSeconds('2m') === 120, 'durations');
  expect(durationSeconds('1500ms') === 1.5 && durationSeconds('7') === 7, 'durations');
  let threw = false;
  try {
    durationSeconds('soon');
  } catch (e) {
    threw = true;
  }
  expect(threw, 'a bad duration is refused');

  const big = settings({ SIZE: '1000' });
  expect(big.vus === 1000 && big.prep === 500 && big.think === 2, JSON.stringify(big));
  const tuned = settings({ SIZE: '100', VUS: '7', THINK: '0', PREP: '1', BASE_URL: 'http://x/' });
  expect(tuned.vus === 7 && tuned.think === 0 && tuned.prep === 1, JSON.stringify(tuned));
  expect(tuned.baseUrl === 'http://x', tuned.baseUrl);
  expect(settings({ SIZE: '1000', ACCOUNTS: '/x.json' }).prep === 2, 'a prepared pool needs no prep');
}
