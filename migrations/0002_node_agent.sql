-- The agent that speaks for each node: mutual authentication checks that the
-- peer's agent SPIFFE ID is the one registered for the node it meant to reach.
ALTER TABLE nodes ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
CREATE INDEX nodes_by_agent ON nodes (agent_id);
