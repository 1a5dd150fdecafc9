//! velo: build and run environments that do not depend on where they live.
//!
//! Files are stored once, by BLAKE3 content hash, in a global [`store`]; a [`manifest`] names a
//! whole tree by content. This library holds everything the `velo` binary does, one module per
//! verb a user types, and knows nothing of command-line parsing (that is `src/cli/`).
//!
//! | module       | command          | what it owns                                              |
//! |--------------|------------------|-----------------------------------------------------------|
//! | [`store`]    |                  | blobs, temp-and-rename writes, the store lock, GC roots   |
//! | [`manifest`] | `velo manifest`  | the tree model, its canonical encoding, validation, diff  |
//! | [`ingest`]   | `velo ingest`    | walking a directory into blobs and a manifest             |
//! | [`status`]   | `velo status`    | store health, dedup ratio, `--verify`                     |
//! | [`gc`]       | `velo gc`        | collecting blobs no registered manifest needs             |
//! | [`human`]    |                  | sizes written for people                                  |
//! | [`live`]     |                  | the set of live blobs that status and gc agree on         |
//! | [`inception`]| `velo inception` | project root, shim location, the projection's environment |
//! | [`remote`]   | `velo push`, `velo pull` | the remote tier: verified object storage between machines |
//! | [`run`]      | `velo run`       | layers, link farms, the overlay and the `--isolate` sandbox |
//! | [`doctor`]   | `velo doctor`    | what namespaces and OverlayFS this machine allows         |
//! | [`cache`]    | `velo cache`     | content keys, `target/` snapshots, fresh restores         |
//! | [`cargo`]    | `velo cargo`     | cargo through the cache: restore if cold, build projected, save |
//! | [`child`]    |                  | a child's exit status and signals become velo's           |
//! | [`trace`]    | `velo trace`     | picking the backend, tracing a command projected, the analysis |
//! | [`scan`]     | `velo scan`      | physical paths in a target directory, per crate and class |
//! | [`audit`]    | `velo audit`     | the report (table, JSON, SARIF, Markdown), baselines, the gate |
//!
//! Errors are typed per module (`thiserror`); the binary adds context with `anyhow`.

pub mod audit;
pub mod cache;
pub mod cargo;
pub mod child;
pub mod doctor;
pub mod gc;
pub mod human;
pub mod inception;
pub mod ingest;
pub mod live;
pub mod manifest;
pub mod remote;
pub mod run;
pub mod scan;
pub mod status;
pub mod store;
pub mod trace;
