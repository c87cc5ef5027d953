-- What isolated each VM, as its backend reported it when it was ready (issue 9); see
-- store/sql/sqlite/tickets/0002_vm_isolation.sql.
ALTER TABLE vms ADD COLUMN isolation text;
