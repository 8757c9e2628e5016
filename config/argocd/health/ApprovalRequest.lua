-- Argo CD health of a portcullis.dev ApprovalRequest: a paused call, by status.state.
-- Pending (or no state yet): Suspended, as Argo CD marks what waits on an outside event, here a
-- human's decision. Approved and Denied: Healthy, since either is the decision the request exists
-- to get, and a refusal is not a fault. Expired: Degraded, since nobody decided in time and the
-- call was refused for want of an answer. Any other state: Unknown.
-- Argo CD runs this without the string library: only concatenation and tostring.
local spec = obj.spec or {}
local status = obj.status or {}
local state = status.state or "Pending"
local call = tostring(spec.tool)
if spec.action ~= nil then
  call = call .. "/" .. spec.action
end
call = call .. " by agent " .. tostring(spec.agent)

local function decided(verb)
  local message = verb .. " " .. call
  if status.decidedBy ~= nil then
    message = message .. " by " .. status.decidedBy
  end
  if status.decidedAt ~= nil then
    message = message .. " at " .. status.decidedAt
  end
  if status.comment ~= nil and status.comment ~= "" then
    message = message .. ": " .. status.comment
  end
  return message
end

if state == "Pending" then
  local message = "Waiting for a decision on " .. call
  if spec.approvers ~= nil and #spec.approvers > 0 then
    message = message .. " from " .. table.concat(spec.approvers, ", ")
  end
  if spec.expiresAt ~= nil then
    message = message .. " until " .. spec.expiresAt
  end
  return { status = "Suspended", message = message }
end
if state == "Approved" then
  return { status = "Healthy", message = decided("Approved") }
end
if state == "Denied" then
  return { status = "Healthy", message = decided("Denied") }
end
if state == "Expired" then
  local message = "Expired without a decision: " .. call .. " was refused"
  if spec.expiresAt ~= nil then
    message = message .. " (expired at " .. spec.expiresAt .. ")"
  end
  return { status = "Degraded", message = message }
end
return { status = "Unknown", message = "Unknown state " .. tostring(state) }
