-- Ids past the guard (SQLite's 0009: a sequence that follows a real row at or above 2^62
-- is left alone, and ids count on from it by one). An identity sequence here does not
-- follow ids written explicitly; nothing to change: this step keeps the two dialects'
-- schema versions in step.
SELECT 1;
