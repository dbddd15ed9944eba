//! Kernel modules for L1: find them in an unpacked Debian kernel package,
//! read their dependencies from `.modinfo` (the package has no
//! `modules.dep`: `depmod` runs in its postinst), and order them so that
//! busybox `insmod` can load them one by one.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::elf::{Elf, ElfError};

/// Errors from indexing or loading kernel modules.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("module dependency cycle through `{0}`")]
    Cycle(String),
    #[error("cannot decompress module `{path}` with `{tool}`: {detail}")]
    Decompress {
        path: PathBuf,
        tool: &'static str,
        detail: String,
    },
    #[error("module `{path}` is not a valid ELF object")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("module `{name}` (needed by {needed_by}) is not in {root}")]
    Missing {
        name: String,
        needed_by: String,
        root: PathBuf,
    },
}

/// How a module file is compressed (Debian 6.1 ships plain `.ko`; later
/// kernels ship `.ko.xz` or `.ko.zst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    fn of(file_name: &str) -> Option<Self> {
        [
            (".ko", Self::None),
            (".ko.gz", Self::Gzip),
            (".ko.xz", Self::Xz),
            (".ko.zst", Self::Zstd),
        ]
        .into_iter()
        .find(|(suffix, _)| file_name.ends_with(suffix))
        .map(|(_, c)| c)
    }

    fn tool(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Xz => Some("xz"),
            Self::Zstd => Some("zstd"),
        }
    }
}

/// A module ready to be copied into L1.
#[derive(Clone, Debug)]
pub struct Module {
    /// Canonical name (`-` written as `_`, as the kernel does): `kvm_amd`.
    pub name: String,
    /// Uncompressed object bytes.
    pub object: Vec<u8>,
}

/// All modules of one kernel, by canonical name.
pub struct ModuleIndex {
    root: PathBuf,
    by_name: BTreeMap<String, (PathBuf, Compression)>,
}

impl ModuleIndex {
    /// Indexes every module file under `root` (e.g. `lib/modules/<release>`).
    pub fn scan(root: &Path) -> Result<Self, KmodError> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let io_err = |source| KmodError::Io {
                path: dir.clone(),
                source,
            };
            for entry in fs::read_dir(&dir).map_err(io_err)? {
                let entry = entry.map_err(io_err)?;
                let path = entry.path();
                if entry.file_type().map_err(io_err)?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if let Some(compression) = Compression::of(&file_name) {
                    let stem = file_name.split(".ko").next().unwrap_or_default();
                    by_name.insert(canonical(stem), (path, compression));
                }
            }
        }
        Ok(ModuleIndex {
            root: root.to_path_buf(),
            by_name,
        })
    }

    /// `wanted` and everything they depend on, dependencies first, each once.
    pub fn resolve(&self, wanted: &[String]) -> Result<Vec<Module>, KmodError> {
        let mut ordered = Vec::new();
        let mut visiting = Vec::new();
        for name in wanted {
            self.visit(
                &canonical(name),
                "the scenario",
                &mut visiting,
                &mut ordered,
            )?;
        }
        Ok(ordered)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        visiting: &mut Vec<String>,
        ordered: &mut Vec<Module>,
    ) -> Result<(), KmodError> {
        if ordered.iter().any(|m| m.name == name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            return Err(KmodError::Cycle(name.to_string()));
        }
        let (path, compression) = self.by_name.get(name).ok_or_else(|| KmodError::Missing {
            name: name.to_string(),
            needed_by: needed_by.to_string(),
            root: self.root.clone(),
        })?;
        let object = read_object(path, *compression)?;
        let elf = Elf::parse(&object).map_err(|source| KmodError::Elf {
            path: path.clone(),
            source,
        })?;
        let modinfo = elf
            .section(".modinfo")
            .map_err(|source| KmodError::Elf {
                path: path.clone(),
                source,
            })?
            .unwrap_or_default();
        visiting.push(name.to_string());
        for dep in depends(modinfo) {
            self.visit(&dep, name, visiting, ordered)?;
        }
        visiting.pop();
        ordered.push(Module {
            name: name.to_string(),
            object,
        });
        Ok(())
    }
}

/// The kernel treats `-` and `_` in module names alike.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list of a `.modinfo` section (NUL-separated `key=value`).
pub fn depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|dep| !dep.is_empty())
        .map(|dep| canonical(&dep))
        .collect()
}

fn read_object(path: &Path, compression: Compression) -> Result<Vec<u8>, KmodError> {
    let Some(tool) = compression.tool() else {
        return fs::read(path).map_err(|source| KmodError::Io {
            path: path.to_path_buf(),
            source,
        });
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| KmodError::Decompress {
            path: path.to_path_buf(),
            tool,
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(KmodError::Decompress {
            path: path.to_path_buf(),
            tool,
            detail,
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;

    #[test]
    fn parses_depends() {
        assert_eq!(
            depends(b"license=GPL\0depends=kvm\0name=kvm_amd\0"),
            ["kvm"]
        );
        assert_eq!(depends(b"depends=llc,stp\0"), ["llc", "stp"]);
        assert_eq!(depends(b"depends=\0name=tun\0"), Vec::<String>::new());
        assert_eq!(depends(b"depends=kvm-foo\0"), ["kvm_foo"]);
        assert!(depends(b"").is_empty());
    }

    fn module_tree(label: &str, modules: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("rig-kmod-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (i, (file, deps)) in modules.iter().enumerate() {
            let dir = root.join(format!("kernel/sub{}", i % 2));
            fs::create_dir_all(&dir).unwrap();
            let modinfo = format!("depends={deps}\0");
            fs::write(
                dir.join(file),
                build(false, &[(".modinfo", modinfo.as_bytes())]),
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn orders_dependencies_first() {
        let root = module_tree(
            "order",
            &[
                ("irqbypass.ko", ""),
                ("kvm.ko", "irqbypass"),
                ("kvm-amd.ko", "kvm"),
                ("llc.ko", ""),
                ("stp.ko", "llc"),
                ("bridge.ko", "llc,stp"),
                ("veth.ko", ""),
            ],
        );
        let index = ModuleIndex::scan(&root).unwrap();
        let wanted: Vec<String> = ["kvm-amd", "bridge", "stp", "veth"]
            .map(String::from)
            .to_vec();
        let names: Vec<String> = index
            .resolve(&wanted)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            names,
            [
                "irqbypass",
                "kvm",
                "kvm_amd",
                "llc",
                "stp",
                "bridge",
                "veth"
            ]
        );
    }

    #[test]
    fn reports_missing_dependencies_and_cycles() {
        let root = module_tree("missing", &[("a.ko", "b"), ("c.ko", "d"), ("d.ko", "c")]);
        let index = ModuleIndex::scan(&root).unwrap();
        let missing = index.resolve(&["a".to_string()]).unwrap_err();
        assert!(
            matches!(&missing, KmodError::Missing { name, needed_by, .. } if name == "b" && needed_by == "a")
        );
        let cycle = index.resolve(&["c".to_string()]).unwrap_err();
        fs::remove_dir_all(&root).unwrap();
        assert!(matches!(cycle, KmodError::Cycle(_)));
    }
}
