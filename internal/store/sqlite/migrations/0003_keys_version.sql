-- A counter bumped in every transaction that claims or releases a unique key (a
-- machine's MAC), so that DHCP can keep the set of known MACs in memory and reload
-- it only when it changed (also when another replica changed it).
ALTER TABLE meta ADD COLUMN keys_version INTEGER NOT NULL DEFAULT 0;
