// A local Step Functions API for the pipeline's state machine, on one loopback port.
//
// Serves the awsJson1_0 operations the trigger and the tests use (StartExecution, DescribeExecution,
// ListExecutions, StopExecution, GetExecutionHistory), runs each execution with aws-local-stepfunctions, and sends
// every Task to its Lambda function through `cargo lambda watch`'s Invoke API, by function name (the library would
// pass the full ARN, which cargo lambda does not resolve). A handler's error payload becomes the error name Step
// Functions sees (its `errorType`), so Retry and Catch behave as in AWS. Waits and Retry intervals are shortened
// with the library's overrides; the definition itself is used as written, with only the `${...}` substitutions
// the SAM template makes in production.
//
// Extra, not in AWS:
//   GET  /_local/health                    {"ok": true}
//   GET  /_local/substitutions             the ${...} substitution map
//   GET  /_local/executions                every execution, summarised
//   GET  /_local/executions/<name>         one execution: status, output, error, event log, task calls, and every
//                                          StartExecution request that named it
// `--check` validates the definition (ASL, substitutions, Task resources) and exits.
//
// Usage: node runner.mjs --definition FILE --lambda-endpoint URL [--port 0] [--port-file FILE] [--wait-ms 20]
//        [--retry-ms 20] [--region us-east-1] [--account 123456789012] [--name ami-pipeline] [--log-dir DIR]
//        [--served ami-build,ami-snapshot,...]
// Prints `runner listening on 127.0.0.1:PORT` once it accepts requests.

import { createServer } from 'node:http';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
// aws-local-stepfunctions lives in the git-ignored tool folder that tests/stack/install.sh fills.
const MODULES = process.env.AMI_LOCAL_NODE_MODULES ?? join(ROOT, '.tools', 'node', 'node_modules');
const { StateMachine } = await import(
  pathToFileURL(join(MODULES, 'aws-local-stepfunctions', 'build', 'main.node.esm.js')).href
);

const { values: opt } = parseArgs({
  options: {
    definition: { type: 'string' },
    'lambda-endpoint': { type: 'string' },
    port: { type: 'string', default: '0' },
    'port-file': { type: 'string' },
    'wait-ms': { type: 'string', default: '20' },
    'retry-ms': { type: 'string', default: '20' },
    region: { type: 'string', default: 'us-east-1' },
    account: { type: 'string', default: '123456789012' },
    name: { type: 'string', default: 'ami-pipeline' },
    'log-dir': { type: 'string' },
    served: { type: 'string' },
    check: { type: 'boolean', default: false },
  },
});
if (!opt.definition || (!opt['lambda-endpoint'] && !opt.check)) {
  console.error('usage: runner.mjs --definition FILE --lambda-endpoint URL [--port N] [--port-file F]');
  process.exit(2);
}

const REGION = opt.region;
const ACCOUNT = opt.account;
const SM_NAME = opt.name;
const STATE_MACHINE_ARN = `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${SM_NAME}`;
const LAMBDA = (opt['lambda-endpoint'] ?? '').replace(/\/$/, '');
const WAIT_MS = Number(opt['wait-ms']);
// When given, the functions that exist locally: invoking another fails at once, as an unknown function would.
const SERVED = opt.served ? new Set(opt.served.split(',').filter(Boolean)) : null;
const RETRY_MS = Number(opt['retry-ms']);
// AWS's default Task timeout is 99999999 s; aws-local-stepfunctions defaults to 60 s. A Lambda cannot run longer
// than 900 s, so 900 s locally means "no limit of the state machine's own", as in AWS.
const AWS_DEFAULT_TASK_TIMEOUT = 900;

/** The function behind each ${...} name of the definition (functions.json; the SAM template defines the same). */
const FUNCTIONS = JSON.parse(readFileSync(join(HERE, 'functions.json'), 'utf8'));
const SUBSTITUTIONS = Object.fromEntries(
  Object.entries(FUNCTIONS).map(([k, fn]) => [k, `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${fn}`]),
);

// ---------------------------------------------------------------------------------------------------------------
// The definition

function substitute(text) {
  const missing = new Set();
  const out = text.replace(/\$\{([A-Za-z0-9_]+)\}/g, (m, key) => {
    if (key in SUBSTITUTIONS) return SUBSTITUTIONS[key];
    missing.add(key);
    return m;
  });
  if (missing.size) throw new Error(`definition uses undefined substitutions: ${[...missing].join(', ')}`);
  return out;
}

/** Calls f(name, state) for every state, nested Map and Parallel states included. */
function eachState(machine, f) {
  for (const [name, state] of Object.entries(machine.States ?? {})) {
    f(name, state);
    const nested = state.ItemProcessor ?? state.Iterator;
    if (nested) eachState(nested, f);
    for (const branch of state.Branches ?? []) eachState(branch, f);
  }
}

const definitionText = readFileSync(opt.definition, 'utf8');
const definition = JSON.parse(substitute(definitionText));
const taskFunctions = {}; // Task state name -> function name
const waitStates = [];
const retryStates = [];
eachState(definition, (name, state) => {
  if (state.Type === 'Task') {
    const m = /^arn:aws:lambda:[^:]+:\d{12}:function:([A-Za-z0-9_-]+)(:[A-Za-z0-9_$-]+)?$/.exec(state.Resource);
    if (!m) throw new Error(`Task ${name}: Resource ${state.Resource} is not a Lambda function ARN`);
    if (name in taskFunctions) throw new Error(`Task name ${name} is used twice; local handlers are keyed by name`);
    taskFunctions[name] = m[1];
    if (state.TimeoutSeconds === undefined && state.TimeoutSecondsPath === undefined) {
      state.TimeoutSeconds = AWS_DEFAULT_TASK_TIMEOUT;
    }
  }
  if (state.Type === 'Wait') waitStates.push(name);
  if (state.Retry) retryStates.push(name);
});
// Validates the definition (asl-validator) once, at start-up.
const machine = new StateMachine(definition, { validationOptions: { checkArn: true, checkPaths: true } });
if (opt.check) {
  // --check: the definition is valid ASL and every ${...} is defined; print what the runner would run.
  console.log(JSON.stringify({ valid: true, substitutions: SUBSTITUTIONS, tasks: taskFunctions, waits: waitStates,
    retries: retryStates }, null, 1));
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Executions

/** name -> record */
const executions = new Map();

function now() {
  return Date.now();
}

/** Invokes a function through cargo lambda watch and returns its output, or throws the error Step Functions would
 * see: `errorType` as the error name and the error payload (JSON) as the cause. */
async function invoke(fn, payload) {
  if (SERVED && !SERVED.has(fn)) {
    const err = new Error(JSON.stringify({ errorMessage: `Function not found: ${fn} (not built locally)` }));
    err.name = 'Lambda.ResourceNotFoundException';
    throw err;
  }
  let res;
  try {
    res = await fetch(`${LAMBDA}/2015-03-31/functions/${fn}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
    });
  } catch (e) {
    const err = new Error(JSON.stringify({ errorMessage: `invoke ${fn}: ${e.cause?.message ?? e.message}` }));
    err.name = 'Lambda.SdkClientException';
    throw err;
  }
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const functionError = res.headers.get('x-amz-function-error');
  if (res.ok && !functionError) {
    if (body === null && text) {
      const err = new Error(JSON.stringify({ errorMessage: `${fn} returned non-JSON output: ${text.slice(0, 200)}` }));
      err.name = 'Lambda.Unknown';
      throw err;
    }
    return body;
  }
  if (body && typeof body === 'object' && typeof body.errorType === 'string') {
    const err = new Error(JSON.stringify({ errorType: body.errorType, errorMessage: body.errorMessage ?? '' }));
    err.name = body.errorType;
    throw err;
  }
  // No error payload: the function crashed or the invoke API failed.
  const err = new Error(JSON.stringify({ errorMessage: `invoke ${fn}: HTTP ${res.status} ${text.slice(0, 500)}` }));
  err.name = res.status >= 500 ? 'Lambda.Unknown' : 'Lambda.ServiceException';
  throw err;
}

function compactEvent(ev) {
  const out = { t: ev.timestamp, type: ev.type };
  if (ev.state) {
    out.state = ev.state.name;
    out.stateType = ev.state.type;
  }
  if (ev.parentState) out.parent = ev.parentState.name;
  if (ev.index !== undefined) out.index = ev.index;
  if (ev.Error !== undefined) {
    out.error = ev.Error;
    out.cause = typeof ev.Cause === 'string' ? ev.Cause : JSON.stringify(ev.Cause ?? null);
  }
  if (ev.retry) out.attempt = ev.retry.attempt;
  return out;
}

function startExecution(name, input) {
  const arn = `arn:aws:states:${REGION}:${ACCOUNT}:execution:${SM_NAME}:${name}`;
  const rec = {
    name,
    executionArn: arn,
    stateMachineArn: STATE_MACHINE_ARN,
    input,
    status: 'RUNNING',
    startDate: now(),
    stopDate: null,
    output: null,
    error: null,
    cause: null,
    events: [],
    tasks: [],
    startRequests: [{ t: now(), result: 'created' }],
  };
  executions.set(name, rec);

  const handlers = {};
  for (const [stateName, fn] of Object.entries(taskFunctions)) {
    handlers[stateName] = async (payload) => {
      const call = {
        state: stateName,
        function: fn,
        action: payload?.action ?? null,
        region: payload?.region ?? null,
        start: now(),
        ms: null,
        error: null,
      };
      rec.tasks.push(call);
      try {
        return await invoke(fn, payload);
      } catch (e) {
        call.error = e.name;
        throw e;
      } finally {
        call.ms = now() - call.start;
      }
    };
  }
  const waitTimeOverrides = Object.fromEntries(waitStates.map((s) => [s, WAIT_MS]));
  const retryIntervalOverrides = Object.fromEntries(retryStates.map((s) => [s, RETRY_MS]));
  const context = {
    Execution: { Id: arn, Name: name, RoleArn: `arn:aws:iam::${ACCOUNT}:role/${SM_NAME}` },
    StateMachine: { Id: STATE_MACHINE_ARN, Name: SM_NAME },
  };
  let parsed;
  try {
    parsed = JSON.parse(input);
  } catch {
    parsed = {};
  }
  const execution = machine.run(parsed, {
    overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides, retryIntervalOverrides },
    context,
  });
  (async () => {
    for await (const ev of execution.eventLogs) rec.events.push(compactEvent(ev));
  })().catch((e) => console.error(`runner: event log of ${name}: ${e}`));
  execution.result.then(
    (output) => {
      rec.status = 'SUCCEEDED';
      rec.output = JSON.stringify(output);
    },
    (e) => {
      const err = e?.cause ?? e;
      if (e?.name === 'ExecutionAbortedError') {
        rec.status = 'ABORTED';
      } else if (e?.name === 'ExecutionTimeoutError') {
        rec.status = 'TIMED_OUT';
      } else {
        rec.status = 'FAILED';
      }
      rec.error = err?.name ?? 'States.Runtime';
      rec.cause = err?.message ?? String(err);
    },
  ).finally(() => {
    rec.stopDate = now();
    rec.abort = undefined;
    console.log(`runner: ${name} ${rec.status}${rec.error ? ` ${rec.error}` : ''} in ${rec.stopDate - rec.startDate} ms`);
    if (opt['log-dir']) {
      try {
        mkdirSync(opt['log-dir'], { recursive: true });
        // give the event log a moment to drain
        setTimeout(() => writeFileSync(join(opt['log-dir'], `${name}.json`), JSON.stringify(detail(rec), null, 1)), 50);
      } catch (e) {
        console.error(`runner: writing log of ${name}: ${e}`);
      }
    }
  });
  rec.abort = execution.abort;
  console.log(`runner: started ${name}`);
  return rec;
}

const secs = (ms) => (ms === null ? undefined : ms / 1000);

function describe(rec) {
  const out = {
    executionArn: rec.executionArn,
    stateMachineArn: rec.stateMachineArn,
    name: rec.name,
    status: rec.status,
    startDate: secs(rec.startDate),
    input: rec.input,
    inputDetails: { included: true },
  };
  if (rec.stopDate !== null) out.stopDate = secs(rec.stopDate);
  if (rec.output !== null) {
    out.output = rec.output;
    out.outputDetails = { included: true };
  }
  if (rec.error !== null) {
    out.error = rec.error;
    out.cause = rec.cause;
  }
  return out;
}

function listItem(rec) {
  const out = {
    executionArn: rec.executionArn,
    stateMachineArn: rec.stateMachineArn,
    name: rec.name,
    status: rec.status,
    startDate: secs(rec.startDate),
  };
  if (rec.stopDate !== null) out.stopDate = secs(rec.stopDate);
  return out;
}

function detail(rec) {
  return {
    ...describe(rec),
    input: safeParse(rec.input),
    output: rec.output === null ? null : safeParse(rec.output),
    durationMs: rec.stopDate === null ? now() - rec.startDate : rec.stopDate - rec.startDate,
    startMs: rec.startDate,
    stopMs: rec.stopDate,
    events: rec.events,
    tasks: rec.tasks,
    startRequests: rec.startRequests,
  };
}

function safeParse(s) {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(type, message, status = 400) {
    super(message);
    this.type = type;
    this.status = status;
  }
}

const NAME_RE = /^[A-Za-z0-9_-]{1,80}$/;

function byArn(arn) {
  const m = /^arn:aws:states:[^:]+:\d{12}:execution:([^:]+):([^:]+)$/.exec(arn ?? '');
  const rec = m && m[1] === SM_NAME ? executions.get(m[2]) : undefined;
  if (!rec) throw new ApiError('ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`);
  return rec;
}

function checkStateMachine(arn) {
  if (arn !== STATE_MACHINE_ARN) {
    throw new ApiError('StateMachineDoesNotExist', `State Machine Does Not Exist: '${arn}'`);
  }
}

const operations = {
  StartExecution(req) {
    checkStateMachine(req.stateMachineArn);
    const name = req.name ?? crypto.randomUUID();
    if (!NAME_RE.test(name)) throw new ApiError('InvalidName', `Invalid Name: '${name}'`);
    const input = req.input ?? '{}';
    try {
      JSON.parse(input);
    } catch {
      throw new ApiError('InvalidExecutionInput', 'Invalid State Machine Execution Input: not JSON');
    }
    if (Buffer.byteLength(input) > 256 * 1024) {
      throw new ApiError('InvalidExecutionInput', 'input larger than 256 KiB');
    }
    const existing = executions.get(name);
    if (existing) {
      // As AWS: the same name and input while the first execution is open is the same execution (success);
      // otherwise the name is taken (for 90 days).
      if (existing.status === 'RUNNING' && existing.input === input) {
        existing.startRequests.push({ t: now(), result: 'same-execution' });
        return { executionArn: existing.executionArn, startDate: secs(existing.startDate) };
      }
      existing.startRequests.push({ t: now(), result: 'ExecutionAlreadyExists' });
      throw new ApiError('ExecutionAlreadyExists', `Execution Already Exists: '${existing.executionArn}'`);
    }
    const rec = startExecution(name, input);
    return { executionArn: rec.executionArn, startDate: secs(rec.startDate) };
  },
  DescribeExecution(req) {
    return describe(byArn(req.executionArn));
  },
  ListExecutions(req) {
    checkStateMachine(req.stateMachineArn);
    let list = [...executions.values()];
    if (req.statusFilter) list = list.filter((r) => r.status === req.statusFilter);
    list.sort((a, b) => b.startDate - a.startDate);
    return { executions: list.map(listItem) };
  },
  StopExecution(req) {
    const rec = byArn(req.executionArn);
    if (rec.status === 'RUNNING' && rec.abort) {
      rec.error = req.error ?? null;
      rec.cause = req.cause ?? null;
      rec.abort();
    }
    return { stopDate: secs(rec.stopDate ?? now()) };
  },
  GetExecutionHistory(req) {
    const rec = byArn(req.executionArn);
    const events = rec.events.map((e, i) => ({ id: i + 1, timestamp: e.t / 1000, type: e.type, local: e }));
    return { events: req.reverseOrder ? events.reverse() : events };
  },
};

function send(res, status, body, type = 'application/x-amz-json-1.0') {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://localhost');
    if (req.method === 'GET' && url.pathname.startsWith('/_local/')) {
      const parts = url.pathname.split('/').filter(Boolean);
      if (parts[1] === 'health') return send(res, 200, { ok: true }, 'application/json');
      if (parts[1] === 'substitutions') return send(res, 200, SUBSTITUTIONS, 'application/json');
      if (parts[1] === 'executions' && parts.length === 2) {
        return send(res, 200, { executions: [...executions.values()].map(listItem) }, 'application/json');
      }
      if (parts[1] === 'executions' && parts.length === 3) {
        const rec = executions.get(decodeURIComponent(parts[2]));
        if (!rec) return send(res, 404, { message: 'no such execution' }, 'application/json');
        return send(res, 200, detail(rec), 'application/json');
      }
      return send(res, 404, { message: 'not found' }, 'application/json');
    }
    const body = await readBody(req);
    const target = req.headers['x-amz-target'] ?? '';
    const op = target.startsWith('AWSStepFunctions.') ? target.slice('AWSStepFunctions.'.length) : null;
    if (req.method !== 'POST' || !op) {
      return send(res, 400, { __type: 'UnknownOperationException', message: `unsupported: ${req.method} ${target}` });
    }
    if (!operations[op]) {
      return send(res, 400, { __type: 'UnknownOperationException', message: `${op} is not served locally` });
    }
    let input;
    try {
      input = body ? JSON.parse(body) : {};
    } catch {
      return send(res, 400, { __type: 'SerializationException', message: 'body is not JSON' });
    }
    return send(res, 200, operations[op](input));
  } catch (e) {
    if (e instanceof ApiError) return send(res, e.status, { __type: e.type, message: e.message });
    console.error('runner:', e);
    return send(res, 500, { __type: 'InternalFailure', message: String(e?.message ?? e) });
  }
});

server.listen(Number(opt.port), '127.0.0.1', () => {
  const { port } = server.address();
  if (opt['port-file']) writeFileSync(opt['port-file'], `${port}\n`);
  console.log(`runner listening on 127.0.0.1:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const rec of executions.values()) rec.abort?.();
    server.close();
    process.exit(0);
  });
}
