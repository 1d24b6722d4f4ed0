// A local Step Functions API for the pipeline's state machine, on one loopback port.
//
// Serves the awsJson1_0 operations the trigger and the tests use (StartExecution, DescribeExecution,
// ListExecutions, StopExecution, GetExecutionHistory), runs each execution with aws-local-stepfunctions, and sends
// every Task to its Lambda function through `cargo lambda watch`'s Invoke API, by function name (the library would
// pass the full ARN, which cargo lambda does not resolve). A handler's error payload becomes the error name Step
// Functions sees (its `errorType`), so Retry and Catch behave as in AWS. Time is shortened in two ways, and
// otherwise the definition is used as written, with only the `${...}` substitutions the SAM template makes in
// production:
//   - Retry timing is scaled, not replaced: every retrier's IntervalSeconds and MaxDelaySeconds are multiplied by
//     --retry-scale (default 0.001: 14 s -> 14 ms, 600 s -> 0.6 s) in the in-memory copy the executions run, so
//     BackoffRate, MaxDelaySeconds, MaxAttempts and JitterStrategy act as in AWS (the library honours fractional
//     seconds; JitterStrategy NONE is exact). A status Task's NotReady retrier (the poll loop) therefore polls on
//     the production schedule, 1000 times faster. (The library's retryIntervalOverrides would replace backoff and
//     cap with one fixed interval.)
//   - Wait states take --wait-ms (the library's waitTimeOverrides): their seconds come from a path
//     ($.steps.<step>.wait_seconds), so they cannot be scaled ahead of time.
// A retried Task is one task call per attempt, all under the same state name (rec.tasks), and one StateRetried
// event per retry, as AWS bills one transition per retry.
//
// Extra, not in AWS:
//   GET  /_local/health                    {"ok": true}
//   GET  /_local/substitutions             the ${...} substitution map
//   GET  /_local/executions                every execution, summarised
//   GET  /_local/executions/<name>         one execution: status, output, error, event log, task calls, and every
//                                          StartExecution request that named it
//   POST /_local/faults                    {"state", "error", "count"}: the next `count` calls of that Task state
//                                          run their function, then fail with `error`, a Lambda timeout as Step
//                                          Functions receives it: `Sandbox.Timedout` or `Lambda.Unknown` (below)
// `--check` validates the definition as committed (ASL, whole-second retriers, substitutions, Task resources),
// prints what the runner would run (with the scaled retriers) and exits.
//
// Usage: node runner.mjs --definition FILE --lambda-endpoint URL [--port 0] [--port-file FILE] [--wait-ms 20]
//        [--retry-scale 0.001] [--state-machine-arn ARN] [--log-dir DIR] [--served ami-build,ami-snapshot,...]
// --state-machine-arn is the deployed state machine's (tests/local/deploy.py; region, account and name come from it).
// --retry-scale defaults to $AMI_RUNNER_RETRY_SCALE, else 0.001; 1 runs retries in real time.
// Prints `runner listening on 127.0.0.1:PORT` once it accepts requests.

import { createServer } from 'node:http';
import { appendFileSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
// aws-local-stepfunctions lives in the git-ignored tool folder that scripts/install/stack.sh fills.
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
    'retry-scale': { type: 'string', default: process.env.AMI_RUNNER_RETRY_SCALE ?? '0.001' },
    'state-machine-arn': { type: 'string', default: 'arn:aws:states:us-east-1:123456789012:stateMachine:ami-pipeline' },
    'log-dir': { type: 'string' },
    served: { type: 'string' },
    check: { type: 'boolean', default: false },
  },
});
if (!opt.definition || (!opt['lambda-endpoint'] && !opt.check)) {
  console.error('usage: runner.mjs --definition FILE --lambda-endpoint URL [--port N] [--port-file F]');
  process.exit(2);
}

const STATE_MACHINE_ARN = opt['state-machine-arn'];
const arnParts = /^arn:aws:states:([a-z0-9-]+):(\d{12}):stateMachine:([A-Za-z0-9_-]{1,80})$/.exec(STATE_MACHINE_ARN);
if (!arnParts) {
  console.error(`runner: --state-machine-arn ${STATE_MACHINE_ARN} is not a state machine ARN`);
  process.exit(2);
}
const [, REGION, ACCOUNT, SM_NAME] = arnParts;
const LAMBDA = (opt['lambda-endpoint'] ?? '').replace(/\/$/, '');
const WAIT_MS = Number(opt['wait-ms']);
// When given, the functions that exist locally: invoking another fails at once, as an unknown function would.
const SERVED = opt.served ? new Set(opt.served.split(',').filter(Boolean)) : null;
// Every retrier's IntervalSeconds and MaxDelaySeconds are multiplied by this (see the header).
const RETRY_SCALE = Number(opt['retry-scale']);
if (!(RETRY_SCALE > 0 && RETRY_SCALE <= 1)) {
  console.error(`runner: --retry-scale must be in (0, 1], not ${opt['retry-scale']}`);
  process.exit(2);
}
// AWS's default Task timeout is 99999999 s; aws-local-stepfunctions defaults to 60 s. A Lambda cannot run longer
// than 900 s, so 900 s locally means "no limit of the state machine's own", as in AWS.
const AWS_DEFAULT_TASK_TIMEOUT = 900;

/** The function (binary) behind each ${...} name of the definition: infra/contract.json, generated from the Rust
 * code (functions/core/src/contract.rs); the SAM template defines the same. */
const CONTRACT = JSON.parse(readFileSync(join(HERE, '..', '..', 'infra', 'contract.json'), 'utf8'));
const FUNCTIONS = Object.fromEntries(
  Object.entries(CONTRACT.functions)
    .filter(([, f]) => f.substitution)
    .map(([binary, f]) => [f.substitution, binary]),
);
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
// Whole seconds, as AWS requires (States Language, "Retrying after an error"); asl-validator accepts fractions,
// so the committed definition is checked here before it is scaled.
const retryFieldErrors = [];
eachState(definition, (name, state) => {
  for (const [i, r] of (state.Retry ?? []).entries()) {
    for (const key of ['IntervalSeconds', 'MaxDelaySeconds']) {
      if (key in r && !(Number.isInteger(r[key]) && r[key] >= 1)) {
        retryFieldErrors.push(`${name}.Retry[${i}].${key} = ${r[key]}: must be a positive integer`);
      }
    }
  }
});
if (retryFieldErrors.length) {
  console.error(`runner: invalid retriers:\n  ${retryFieldErrors.join('\n  ')}`);
  process.exit(1);
}
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
// Validates the definition as written (asl-validator) once, at start-up.
new StateMachine(definition, { validationOptions: { checkArn: true, checkPaths: true } });

/** A copy of the definition whose retriers wait `scale` times as long (IntervalSeconds, MaxDelaySeconds); the
 * library's defaults (1 s interval, no cap) are made explicit first so they are scaled too. */
function scaleRetries(machineDefinition, scale) {
  const copy = structuredClone(machineDefinition);
  eachState(copy, (name, state) => {
    for (const r of state.Retry ?? []) {
      r.IntervalSeconds = (r.IntervalSeconds ?? 1) * scale;
      if (r.MaxDelaySeconds !== undefined) r.MaxDelaySeconds *= scale;
    }
  });
  return copy;
}
// Step Functions refuses a state input or output over 256 KiB: "States.DataLimitExceeded ... a terminal error that
// can't be caught by the States.ALL error type", raised when "the output of a state is larger than payload size
// quota" or "after Parameters processing, the input of a state is larger" (Step Functions developer guide, "Handling
// errors"; quota: 256 KiB per state input or output, "Service quotas"). The library checks no size: every state's
// input and output is measured as it enters and leaves (a Task's input after Parameters is a part of the state's,
// so the state's bounds it), and one over the quota fails the execution there, past any Retry or Catch.
const PAYLOAD_LIMIT_BYTES = 262144;
const { execute } = StateMachine.prototype;
StateMachine.prototype.execute = function executeWithPayloadLimit(input, options, cleanupFn) {
  const log = options.eventLogger;
  for (const [dispatch, what] of [['dispatchStateEnteredEvent', 'input'], ['dispatchStateExitedEvent', 'output']]) {
    const original = log[dispatch].bind(log);
    log[dispatch] = (name, type, stateInput, stateOutput) => {
      const bytes = Buffer.byteLength(JSON.stringify(what === 'input' ? stateInput : stateOutput) ?? '');
      if (bytes > PAYLOAD_LIMIT_BYTES) {
        const err = new Error(`The state/task '${name}' returned a result with a size exceeding the maximum number of `
          + `bytes service limit (${what}: ${bytes} bytes, limit ${PAYLOAD_LIMIT_BYTES}).`);
        err.name = 'States.DataLimitExceeded';
        throw err;
      }
      return original(name, type, stateInput, stateOutput);
    };
  }
  return execute.call(this, input, options, cleanupFn);
};

const scaled = scaleRetries(definition, RETRY_SCALE);
const machine = new StateMachine(scaled, { validationOptions: { noValidate: true } });
if (opt.check) {
  // --check: the definition is valid ASL and every ${...} is defined; print what the runner would run.
  const retriers = {};
  eachState(scaled, (name, state) => {
    if (state.Retry) retriers[name] = state.Retry.map((r) => ({ errors: r.ErrorEquals, intervalSeconds: r.IntervalSeconds,
      backoffRate: r.BackoffRate, maxDelaySeconds: r.MaxDelaySeconds, maxAttempts: r.MaxAttempts,
      jitter: r.JitterStrategy }));
  });
  console.log(JSON.stringify({ valid: true, substitutions: SUBSTITUTIONS, tasks: taskFunctions, waits: waitStates,
    retries: retryStates, retryScale: RETRY_SCALE, scaledRetriers: retriers }, null, 1));
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

// A function killed at its timeout reaches Step Functions as `Sandbox.Timedout` on current runtimes (Lambda
// developer guide, "Troubleshoot invocation issues") or as `Lambda.Unknown`: "Unhandled errors in Lambda are reported
// as Lambda.Unknown ... These include out-of-memory errors and function timeouts" (Step Functions developer guide,
// "Handle Lambda service exceptions"). Its work may be done: the function runs, and its answer is replaced by the
// error. The causes' wording is the runner's own.
const TIMEOUT_CAUSES = {
  'Sandbox.Timedout': { errorType: 'Sandbox.Timedout', errorMessage: 'Task timed out after 900.00 seconds (fault)' },
  'Lambda.Unknown': { errorMessage: 'The function timed out; Lambda returned no error type (fault)' },
};
const timeoutFaults = []; // {state, error, left}

function addTimeoutFault(spec) {
  const left = Number(spec?.count ?? 1);
  if (typeof spec?.state !== 'string' || !(spec.error in TIMEOUT_CAUSES) || !(left > 0)) {
    const errors = Object.keys(TIMEOUT_CAUSES).join(' | ');
    throw new ApiError('ValidationException', `fault: {"state", "error": ${errors}, "count"}`);
  }
  timeoutFaults.push({ state: spec.state, error: spec.error, left });
}

/** Throws the timeout a fault asks for on this call of `state`, if any is left. */
function takeTimeoutFault(state) {
  const fault = timeoutFaults.find((f) => f.state === state && f.left > 0);
  if (!fault) return;
  fault.left -= 1;
  const err = new Error(JSON.stringify(TIMEOUT_CAUSES[fault.error]));
  err.name = fault.error;
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
        start: now(),
        ms: null,
        error: null,
      };
      rec.tasks.push(call);
      try {
        const out = await invoke(fn, payload);
        takeTimeoutFault(stateName);
        return out;
      } catch (e) {
        call.error = e.name;
        throw e;
      } finally {
        call.ms = now() - call.start;
      }
    };
  }
  const waitTimeOverrides = Object.fromEntries(waitStates.map((s) => [s, WAIT_MS]));
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
    overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides },
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

function describe(rec) {
  const out = { ...listItem(rec), input: rec.input, inputDetails: { included: true } };
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
    // how the runner shortened time: Waits took waitMs, Retry intervals and caps were multiplied by retryScale
    time: { waitMs: WAIT_MS, retryScale: RETRY_SCALE },
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
    if (req.method === 'POST' && url.pathname === '/_local/faults') {
      addTimeoutFault(safeParse(body || '{}'));
      return send(res, 200, { faults: timeoutFaults }, 'application/json');
    }
    const target = req.headers['x-amz-target'] ?? '';
    const op = target.startsWith('AWSStepFunctions.') ? target.slice('AWSStepFunctions.'.length) : null;
    if (req.method !== 'POST' || !op) {
      return send(res, 400, { __type: 'UnknownOperationException', message: `unsupported: ${req.method} ${target}` });
    }
    if (process.env.AMI_SIM_ACTION_LOG) {
      // Beside moto's: every request by caller, for the IAM-actions check (tests/e2e/test_actions.py).
      const agent = req.headers['x-amz-user-agent'] ?? req.headers['user-agent'] ?? '';
      const line = { service: 'states', action: op, agent, tagged: false, profile: false };
      // the state machine (or execution) a request names: the resource the IAM simulation authorizes it on
      // (tests/e2e/test_iam.py); DescribeExecution is authorized on the execution's ARN
      let parsed = {};
      try {
        parsed = JSON.parse(body || '{}');
      } catch {}
      const params = parsed.stateMachineArn
        ? { stateMachineArn: parsed.stateMachineArn }
        : parsed.executionArn
          ? { executionArn: parsed.executionArn }
          : null;
      const arn = params && Object.values(params)[0];
      if (params) Object.assign(line, { region: arn.split(':')[3], params, resources: {} });
      appendFileSync(process.env.AMI_SIM_ACTION_LOG, JSON.stringify(line) + '\n');
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
