-- Argo CD health of a certpin ClientCertificateSet, from the same conditions
-- Flux reads through kstatus:
--   Stalled=True                      Degraded (input that will not fix itself)
--   Ready=False, reason RestartDue    Suspended (a Manual set waits for the user's restart)
--   Reconciling=True, or spec not yet observed, or Ready not True
--                                     Progressing
--   Ready=True                        Healthy
local hs = {status = "Progressing", message = "Waiting for certpin to observe the set"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for certpin to observe the latest spec"
  return hs
end
local ready, reconciling, stalled
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Reconciling" and c.status == "True" then reconciling = c end
  if c.type == "Stalled" and c.status == "True" then stalled = c end
end
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
elseif ready ~= nil and ready.reason == "RestartDue" then
  hs.status = "Suspended"
  hs.message = ready.message or ""
elseif reconciling ~= nil then
  hs.message = reconciling.reason .. ": " .. (reconciling.message or "")
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
