// The private-check page. Every step of the protocol runs in the
// WebAssembly client core (breachcheck_web.js, built from web/src with
// wasm-bindgen): canonicalisation, blinding, the checks of each answer, the
// proof, the bucket lookup. This script only moves bytes with fetch (as
// grpc-web) and shows the outcome. The number never leaves the WebAssembly
// module except blinded.

import init, {
  Check, Session, callingCode, clientWorkMs, indexInfoRequest, regions,
} from './breachcheck_web.js';

const SERVICE = '/breachcheck.v1.BreachCheck/';
// An index description or an Evaluate answer is small; bucket answers get
// their own bound from the core.
const SMALL_ANSWER = 1 << 20;

const $ = (id) => document.getElementById(id);

/** One grpc-web call: the answer's bytes (read up to maxBytes, then
 * refused) and the grpc-status / grpc-message headers of a trailers-only
 * answer. */
async function call(method, body, maxBytes) {
  const resp = await fetch(SERVICE + method, {
    method: 'POST',
    headers: {
      'content-type': 'application/grpc-web+proto',
      'accept': 'application/grpc-web+proto',
      'x-grpc-web': '1',
    },
    body,
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  if (!resp.ok) {
    throw new Error(`the server answered HTTP ${resp.status}; nothing was decided`);
  }
  const reader = resp.body.getReader();
  const parts = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new Error('the server sent more than an honest answer holds; nothing was decided');
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return {
    bytes,
    status: resp.headers.get('grpc-status') ?? undefined,
    message: resp.headers.get('grpc-message') ?? undefined,
  };
}

/** A pin from the URL fragment (`#key=…&index=…`), which is never sent. */
function pinned(name) {
  const value = new URLSearchParams(location.hash.slice(1)).get(name);
  return value ? value.trim() : undefined;
}

// The session the page loaded, whose index id and key fingerprint it shows:
// every check runs under that key and index, and a server that changes
// either afterwards is refused (reload the page to compare again).
let loaded;

function show(id, text) {
  $(id).textContent = text;
}

function showError(message) {
  $('result').hidden = true;
  const e = $('error');
  e.textContent = `Could not check: ${message}. This is not a "not found": nothing was decided.`;
  e.hidden = false;
  show('progress', '');
}

async function session() {
  const a = await call('GetIndexInfo', indexInfoRequest(), SMALL_ANSWER);
  if (loaded) {
    // Pinned to what the page showed: the same key and index, or an error.
    const s = new Session(a.bytes, a.status, a.message, loaded.publicKey, loaded.indexId);
    return s;
  }
  const s = new Session(a.bytes, a.status, a.message, pinned('key'), pinned('index'));
  show('index-id', s.indexId);
  show('key-fp', s.keyFingerprint);
  show('entries', Math.round(s.entryCount).toLocaleString('en'));
  $('pin-link').href = `#key=${s.publicKey}&index=${s.indexId}`;
  loaded = { publicKey: s.publicKey, indexId: s.indexId };
  return s;
}

function showOutcome(o) {
  const r = $('result');
  r.className = o.found ? 'found' : 'clean';
  show('verdict', o.found
    ? `${o.number} is in the leaked data`
    : `${o.number} was not found in the leaked data`);
  const list = $('breaches');
  list.replaceChildren();
  for (const b of o.breaches) {
    const li = document.createElement('li');
    const name = document.createElement('strong');
    name.textContent = b.name;
    li.append(name, ` (${b.date})`);
    if (b.data_classes.length) {
      li.append(`: exposed ${b.data_classes.join(', ')}`);
    }
    if (b.description) {
      const d = document.createElement('p');
      d.textContent = b.description;
      li.append(d);
    }
    list.append(li);
  }
  show('privacy', `What the server learned: ${o.privacy}.`);
  r.hidden = false;
  $('verdict').focus();
}

async function check(event) {
  event.preventDefault();
  const go = $('go');
  go.disabled = true;
  $('error').hidden = true;
  $('result').hidden = true;
  try {
    show('progress', 'Fetching the index description…');
    const s = await session();
    show('progress', 'Blinding your number in this browser…');
    const c = new Check(s, $('number').value, $('region').value);
    show('progress', 'Asking the server to evaluate the blinded number…');
    const e = await call('Evaluate', c.evaluateRequest(s), SMALL_ANSWER);
    c.acceptEvaluation(s, e.bytes, e.status, e.message);
    show('progress', 'Downloading and verifying your bucket…');
    const b = await call('GetBuckets', c.bucketsRequest(s), c.maxAnswerBytes(s));
    const outcome = JSON.parse(c.acceptBuckets(s, b.bytes, b.status, b.message));
    c.free();
    show('progress', 'Done.');
    showOutcome(outcome);
  } catch (err) {
    showError(err instanceof Error ? err.message : String(err));
  } finally {
    go.disabled = false;
    // Checks finished (with an outcome or an error): what a test waits for.
    document.body.dataset.checks = String(Number(document.body.dataset.checks ?? 0) + 1);
  }
}

async function main() {
  await init();
  const select = $('region');
  for (const code of regions()) {
    const o = document.createElement('option');
    o.value = code;
    o.textContent = `${code} (+${callingCode(code)})`;
    select.append(o);
  }
  select.value = 'CN';
  $('check').addEventListener('submit', check);
  // For the benchmark: the client's own work per number, in this browser.
  window.breachcheck = { clientWorkMs };
  try {
    await session();
    show('progress', 'Ready.');
  } catch (err) {
    showError(err instanceof Error ? err.message : String(err));
  }
  $('go').disabled = false;
  document.body.dataset.ready = 'true';
}

main().catch((err) => showError(err instanceof Error ? err.message : String(err)));
