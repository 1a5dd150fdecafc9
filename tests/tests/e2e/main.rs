//! End-to-end tests: the real `velo` binary on real trees, one module per area.

mod audit; // velo audit: reports, the gate, baselines, traced builds
mod bad_input; // every malformed input gets a clear error and changes nothing
mod cache; // velo cache and velo cargo: keys, snapshots, fresh restores, bad input
mod corpus; // real published crates, fetched with their own lockfiles: restores and scan verdicts against Cargo
mod inception; // the shim under real cargo builds, tools and threads
mod ingest; // ingest, dedup, identity of manifests, the stat index
mod integrity; // the store's permissions, corrupt blobs never served and healed, read-only stores, escapes
mod interception_table; // the shim's exports match the interception table
mod reliability;
// SIGKILL during ingest, concurrent ingest and gc
mod remote; // velo push/pull through a file:// remote: machine B, corruption, concurrent pushes
mod reports; // snapshots of every human and JSON output
mod run; // velo run: farms, the store's immutability, --isolate, malicious manifests
mod scan; // velo scan: physical paths in target directories, per crate and class
mod shim_mode; // velo run --mode shim: the tree served from the store, compared with a farm
mod store; // status, verify and gc
mod trace; // velo trace: uncaught syscalls, leaks and unshimmed processes, seen from outside
