-- As ../0002_node_agent.sql: the agent that speaks for each node.
ALTER TABLE nodes ADD COLUMN agent_id TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX nodes_by_agent ON nodes (agent_id);
