//! `/proc/self/mountinfo`: which mount a path lives on, its filesystem type
//! and options (the attribute cache of NFS/SMB mounts among them).
