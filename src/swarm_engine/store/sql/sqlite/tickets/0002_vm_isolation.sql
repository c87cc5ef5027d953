-- What isolated each VM, as its backend reported it when it was ready (issue 9):
-- 'bwrap' (process sandbox in its own namespaces, unprivileged, no capabilities),
-- 'none' (process backend with isolation = "none": no isolation), 'microvm' (qemu).
-- NULL: not reported (a VM that never became ready, or one recorded before this column).
ALTER TABLE vms ADD COLUMN isolation TEXT;
