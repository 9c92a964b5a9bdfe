-- Argo CD health check for Slipway's runs (slipway.dev/v1alpha1 DatasetPrep, TrainingRun and TuningSweep share
-- this script). It reads what the Slipway operator writes: status.phase, status.observedGeneration and the kstatus
-- conditions (Ready, Reconciling, Stalled). Lua 5.1, as Argo CD runs it.
local hs = {}

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- "Phase: detail", without saying the phase twice when the detail starts with it ("succeeded: ...").
local function say(prefix, detail)
  if detail == nil or detail == "" then
    return prefix
  end
  if string.lower(string.sub(detail, 1, string.len(prefix))) == string.lower(prefix) then
    return string.upper(string.sub(detail, 1, 1)) .. string.sub(detail, 2)
  end
  return prefix .. ": " .. detail
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Slipway operator"
  return hs
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Slipway operator to observe generation " .. string.format("%d", generation)
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = say("Succeeded", status.message)
elseif phase == "Failed" or phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = say(phase, status.message)
elseif stalled ~= nil and stalled.status == "True" then
  -- e.g. KubeRayMissing: the RayJob CRD is not installed
  hs.status = "Degraded"
  hs.message = say(stalled.reason or "Stalled", stalled.message)
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = say("Suspended", status.message)
else
  -- Pending, Waiting (for a dependency), Running
  hs.status = "Progressing"
  hs.message = say(phase, status.message)
end
return hs
