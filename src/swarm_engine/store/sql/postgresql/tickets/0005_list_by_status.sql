-- Listing tickets of one status newest first (`ticket list --status`, the API's pages)
-- reads only that status's rows, in order, however large the history.
CREATE INDEX tickets_status_id ON tickets (status, id);
