-- Argo CD health of a portcullis.dev AgentIdentity, from its spec and the status the operator writes.
-- Progressing: the operator has not yet reported on this generation (status.observedGeneration or
-- the Ready condition's observedGeneration behind metadata.generation), or Ready is Unknown or absent.
-- Healthy: Ready=True, the agent is in the tenant bundle in force. Suspended: the same, with
-- spec.suspended (the kill switch) in force: its calls are denied and its tokens refused. Degraded:
-- Ready=False, with the operator's message (what is invalid, and which revision stays in force).
-- Argo CD runs this without the string library: only concatenation and tostring.
local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.observedGeneration == nil then
  return { status = "Progressing", message = "Waiting for the Portcullis operator to reconcile" }
end
if generation ~= nil and status.observedGeneration < generation then
  return { status = "Progressing", message = "Waiting for the Portcullis operator to reconcile generation " .. tostring(generation) .. " (status is of generation " .. tostring(status.observedGeneration) .. ")" }
end
local ready = condition(status, "Ready")
if ready == nil or ready.status == "Unknown" then
  return { status = "Progressing", message = "Waiting for the Ready condition" }
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  return { status = "Progressing", message = "Waiting for the Ready condition of generation " .. tostring(generation) }
end
if ready.status == "False" then
  return { status = "Degraded", message = ready.message }
end
if ready.status == "True" and obj.spec ~= nil and obj.spec.suspended == true then
  return { status = "Suspended", message = "Suspended: every call of the agent is denied and its tokens are refused; " .. ready.message }
end
if ready.status == "True" then
  return { status = "Healthy", message = ready.message }
end
return { status = "Unknown", message = "Ready is " .. tostring(ready.status) }
