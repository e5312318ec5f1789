-- `mirrorsync forget webhook|mirror NAME` (issue 30): a webhook or copy that left
-- the configuration is no longer listed (status, webhooks list, metrics) once
-- forgotten; its rows stay, so the history that names it (deliveries, published
-- states, mirror.updated events) is kept. Configured again, it is listed again.
ALTER TABLE webhooks ADD COLUMN forgotten_at TEXT;
ALTER TABLE mirrors ADD COLUMN forgotten_at TEXT;
