-- Argo CD health check for Slipway's ModelDeployment (slipway.dev/v1alpha1). It reads what the Slipway operator
-- writes: status.phase, status.observedGeneration and the conditions (the kstatus Ready, Reconciling and Stalled,
-- and Available, Degraded, Drifted, Paused). Lua 5.1, as Argo CD runs it.
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
local degraded = condition(status, "Degraded")
if phase == "Available" then
  hs.status = "Healthy"
  hs.message = say("Available", status.message)
  local drifted = condition(status, "Drifted")
  if drifted ~= nil and drifted.status == "True" then
    -- still serving: drift is a signal to retrain, not an outage
    hs.message = hs.message .. "; " .. (drifted.message or "input drift detected")
  end
elseif phase == "Degraded" then
  hs.status = "Degraded"
  if degraded ~= nil and degraded.status == "True" and degraded.message ~= nil and degraded.message ~= "" then
    hs.message = say("Degraded", degraded.message)
  else
    hs.message = say("Degraded", status.message)
  end
elseif phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = say("Invalid", status.message)
elseif phase == "Deploying" and condition(status, "Paused") ~= nil and condition(status, "Paused").status == "True" then
  -- a canary step with too few requests to judge: it waits for traffic, or for a person to abort it
  hs.status = "Suspended"
  hs.message = say("Paused", condition(status, "Paused").message)
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled.reason or "Stalled", stalled.message)
else
  -- Deploying (a rollout or a canary in progress), Waiting (for its model), Pending
  hs.status = "Progressing"
  hs.message = say(phase, status.message)
end
return hs
