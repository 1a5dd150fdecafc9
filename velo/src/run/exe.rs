//! What kind of executable a command is, read with goblin: the shim reaches only dynamically
//! linked programs (the loader maps it in through `LD_PRELOAD`); a static ELF, or one without a
//! `PT_INTERP` program header, never loads it, so `--mode auto` serves such programs from a
//! link farm.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executable {
    /// A dynamically linked ELF, with its interpreter (`/lib64/ld-linux-x86-64.so.2`).
    Dynamic { interpreter: String },
    /// An ELF without an interpreter: statically linked (musl, Go, busybox-static).
    Static,
    /// A `#!` script, with its interpreter line.
    Script { interpreter: String },
    /// Something else (not ELF, unreadable): the kernel decides at exec time.
    Unknown,
}

impl Executable {
    /// Whether an `LD_PRELOAD` shim can reach this program.
    pub fn shim_can_reach(&self) -> bool {
        matches!(self, Executable::Dynamic { .. } | Executable::Script { .. })
    }
}

/// Inspects the file at `path` (only its first 64 KiB for scripts; ELF headers are small).
pub fn inspect(path: &Path) -> Executable {
    let Ok(bytes) = std::fs::read(path) else {
        return Executable::Unknown;
    };
    if let Some(line) = bytes.strip_prefix(b"#!") {
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        return Executable::Script {
            interpreter: String::from_utf8_lossy(&line[..end]).trim().to_owned(),
        };
    }
    match goblin::elf::Elf::parse(&bytes) {
        Ok(elf) => match elf.interpreter {
            Some(interp) => Executable::Dynamic {
                interpreter: interp.to_owned(),
            },
            None => Executable::Static,
        },
        Err(_) => Executable::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_scripts_are_told_apart() {
        // This test binary itself is dynamically linked (the default for Rust on Linux gnu).
        let me = std::env::current_exe().unwrap();
        assert!(
            matches!(inspect(&me), Executable::Dynamic { .. }),
            "{:?}",
            inspect(&me)
        );
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("s");
        std::fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(
            inspect(&script),
            Executable::Script {
                interpreter: "/bin/sh -e".into()
            }
        );
        std::fs::write(&script, "plain text").unwrap();
        assert_eq!(inspect(&script), Executable::Unknown);
        assert_eq!(inspect(&t.path().join("missing")), Executable::Unknown);
    }
}
