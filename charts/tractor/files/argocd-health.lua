-- Argo CD health check for serving.tractor.dev/ModelDeployment. Install it in argocd-cm as
--   resource.customizations.health.serving.tractor.dev_ModelDeployment: |
--     <this file>
-- It reads the same conditions as `kubectl wait --for=condition=Ready` and Flux's kstatus: Stalled=True is a
-- failure that waits for a spec change (Degraded), Ready=True with the current generation observed is Healthy,
-- anything else is still on its way (Progressing). Only Lua's base and table libraries are used, as Argo CD
-- provides them.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local ready, stalled, degraded
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Stalled" then stalled = c end
    if c.type == "Degraded" then degraded = c end
  end
end
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = stalled.message}
end
if degraded ~= nil and degraded.status == "True" then
  return {status = "Degraded", message = degraded.message}
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.message}
end
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
return hs
