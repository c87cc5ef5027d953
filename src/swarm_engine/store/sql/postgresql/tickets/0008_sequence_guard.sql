-- Sequence guard (SQLite's 0008: guards that see the id an AUTOINCREMENT assigns, and a
-- raised sequence lowered by the store). An identity sequence here does not follow ids
-- written explicitly; nothing to change: this step keeps the two dialects' schema
-- versions in step.
SELECT 1;
