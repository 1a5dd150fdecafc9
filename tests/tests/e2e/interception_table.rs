//! The interception table and the built shim agree, both ways: every exported function is a
//! Linux row, every Linux row is exported. Adding a hook without a row (or a row without a
//! hook) fails here, which is what keeps the tracer and `velo audit` honest.

use std::collections::BTreeSet;

use velo_e2e::bin_dir;
use velo_intercept::table::{self, Platform};

fn shim_bytes() -> Vec<u8> {
    let path = bin_dir().join("libvelo_shim.so");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it: cargo build -p velo-shim)",
            path.display()
        )
    })
}

fn exported_functions() -> BTreeSet<String> {
    let bytes = shim_bytes();
    let elf = goblin::elf::Elf::parse(&bytes).expect("libvelo_shim.so is an ELF file");
    elf.dynsyms
        .iter()
        .filter(|s| {
            s.st_shndx != 0
                && s.st_type() == goblin::elf::sym::STT_FUNC
                && s.st_bind() != goblin::elf::sym::STB_LOCAL
        })
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name).map(str::to_owned))
        .collect()
}

#[test]
fn every_export_is_a_table_row_and_every_row_is_exported() {
    let exported = exported_functions();
    let rows: BTreeSet<String> = table::for_platform(Platform::Linux)
        .map(|e| e.symbol.to_owned())
        .collect();
    let unlisted: Vec<_> = exported.difference(&rows).collect();
    let missing: Vec<_> = rows.difference(&exported).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "exported but not in velo_intercept::table: {unlisted:?}\nin the table but not exported: {missing:?}\n\
         (docs/interception.md explains how to add a row)"
    );
    // Candidates are the functions without a hook: a hooked one must move to the table.
    for c in table::CANDIDATES {
        assert!(
            !exported.contains(c.symbol),
            "{} is hooked: make it a table row",
            c.symbol
        );
        assert!(
            table::lookup(c.platform, c.symbol).is_none(),
            "{} is a row and a candidate",
            c.symbol
        );
    }
    // The symbols the platform notes name as imported by cargo, rustc and python here.
    for needed in [
        "__xstat64",
        "__lxstat64",
        "__fxstatat64",
        "open64",
        "openat64",
        "stat64",
        "fstatat64",
        "statx",
        "realpath",
        "posix_spawn_file_actions_addchdir_np",
        "remove",
        "execvp",
    ] {
        assert!(exported.contains(needed), "{needed} is not exported");
    }
}

/// The shim carries hidden stand-ins for std's unwinder imports (shim/c/unwind.c) so that every
/// projected process is spared loading libgcc_s. They must stay hidden: exported, they would take
/// the place of the real unwinder in every C++ program of the build.
#[test]
fn shim_does_not_need_libgcc_s_nor_export_the_unwinder() {
    let bytes = shim_bytes();
    let elf = goblin::elf::Elf::parse(&bytes).expect("libvelo_shim.so is an ELF file");
    assert!(
        !elf.libraries.iter().any(|l| l.starts_with("libgcc_s")),
        "libvelo_shim.so needs {:?}: a std import of `_Unwind_*` lacks a stub in shim/c/unwind.c",
        elf.libraries
    );
    let unwind: Vec<_> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx != 0)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .filter(|name| name.starts_with("_Unwind"))
        .collect();
    assert!(unwind.is_empty(), "the shim exports {unwind:?}");
}
