-- Argo CD health for modelplane.dev/ModelDeployment, from the conditions the operator writes
-- (kstatus semantics: Ready, Reconciling, Stalled, each with observedGeneration).
--
--   Degraded     Stalled=True: the operator gave up until something changes (for example no node
--                can fit the GPU request, or the model crashes on load); the message says why.
--   Progressing  no status yet; a status older than the spec (status.observedGeneration, or the
--                condition's own observedGeneration, behind metadata.generation); Reconciling=True;
--                Ready missing or not True.
--   Healthy      Ready=True for the current generation, nothing reconciling.
--   Suspended    scaled to zero on purpose (the Ready condition's reason is ScaledToZero, nothing
--                reconciling or stalled): nothing serves, and nothing is wrong or pending.
--
-- Written for Lua 5.1 (Argo CD runs gopher-lua): no goto, no integer division, no os/io.
-- Installed into argocd-cm by charts/argocd/argocd-cm-patch.yaml, generated from this file.

local hs = {}

local function find_condition(conditions, condition_type)
  for _, condition in ipairs(conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  local text = ""
  if condition.reason ~= nil and condition.reason ~= "" then
    text = condition.reason
  end
  if condition.message ~= nil and condition.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. condition.message
  end
  if text == "" then
    return fallback
  end
  return text
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

-- A condition (or a whole status) written for an older generation says nothing about this spec.
local function is_current(observed)
  return generation == nil or (observed ~= nil and observed >= generation)
end

-- A condition without its own observedGeneration goes by the status's (checked below).
local function condition_is_current(condition)
  return condition.observedGeneration == nil or is_current(condition.observedGeneration)
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True" and condition_is_current(condition)
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if not is_current(obj.status.observedGeneration) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
      " (status is for generation " .. tostring(obj.status.observedGeneration) .. ")"
  return hs
end

local conditions = obj.status.conditions or {}
local stalled = find_condition(conditions, "Stalled")
local reconciling = find_condition(conditions, "Reconciling")
local ready = find_condition(conditions, "Ready")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

-- Scaled to zero on purpose: whether the operator calls that Ready or not, nothing is wrong or pending.
if ready ~= nil and ready.reason == "ScaledToZero" and ready.status ~= "Unknown" and
    condition_is_current(ready) then
  hs.status = "Suspended"
  hs.message = describe(ready, "Scaled to zero")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if ready == nil then
  hs.message = "Waiting for the Ready condition"
elseif ready.status == "True" then
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
else
  hs.message = describe(ready, "Not ready")
end
return hs
