// Validate the custom resources of deploy/k8s against their CRD schemas, offline.
// Usage: kubectl kustomize deploy/k8s | node validate.mjs
// Core kinds are skipped here (tests/test_deploy.py checks them with kubernetes-validate);
// a custom kind this script does not know is an error, so nothing goes unchecked.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { PodMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const CUSTOM = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};
const CORE_GROUPS = new Set(["v1", "apps/v1", "policy/v1", "autoscaling/v2", "batch/v1", "networking.k8s.io/v1"]);

let failed = 0;
for (const doc of parseAllDocuments(readFileSync(0, "utf8"))) {
  const resource = doc.toJS();
  if (!resource) continue;
  const name = `${resource.kind}/${resource.metadata?.name}`;
  if (CORE_GROUPS.has(resource.apiVersion)) continue;
  const Model = CUSTOM[`${resource.apiVersion}/${resource.kind}`];
  if (!Model) {
    console.log(`UNKNOWN ${name} (${resource.apiVersion}): no schema to check it against`);
    failed++;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`VALID ${name}`);
  } catch (error) {
    console.log(`INVALID ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
