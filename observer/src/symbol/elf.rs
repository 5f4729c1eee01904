//! What the unwinder and the address arithmetic need from an ELF file: its
//! PT_LOAD segments and its unwind sections. Parsed once per file (keyed by
//! device, inode, size and mtime) and shared between processes.

use std::{ops::Range, path::Path, sync::Arc};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionKind, SymbolKind};

/// Identifies a file's contents well enough to share parsed data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
}

#[derive(Clone, Copy, Debug)]
struct Load {
    exec: bool,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// A section's stated address range and its bytes.
pub(super) type SectionData = (Range<u64>, Arc<[u8]>);

#[derive(Debug, Default)]
pub(super) struct ElfInfo {
    loads: Vec<Load>,
    pub text: Option<Range<u64>>,
    pub got: Option<Range<u64>>,
    pub eh_frame: Option<SectionData>,
    pub eh_frame_hdr: Option<SectionData>,
    pub debug_frame: Option<Arc<[u8]>>,
    /// Function symbols (start svma, size, name), sorted; filled only for
    /// in-memory images (the vDSO), which blazesym cannot open by path.
    pub funcs: Vec<(u64, u64, String)>,
    /// The GNU build-id note, hex; empty when the file has none.
    pub build_id: String,
}

/// Upper bound on one unwind section we copy (a corrupt header must not
/// make us allocate gigabytes).
const MAX_SECTION: u64 = 256 << 20;

impl ElfInfo {
    pub fn from_file(path: &Path) -> Option<ElfInfo> {
        let f = std::fs::File::open(path).ok()?;
        let cache = object::read::ReadCache::new(f);
        Self::parse(&cache, false)
    }

    pub fn from_bytes(data: &[u8]) -> Option<ElfInfo> {
        Self::parse(data, true)
    }

    fn parse<'d, R: object::ReadRef<'d>>(data: R, with_funcs: bool) -> Option<ElfInfo> {
        let file = object::File::parse(data).ok()?;
        if file.format() != object::BinaryFormat::Elf || !file.is_64() {
            return None;
        }
        let loads: Vec<Load> = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let exec = matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
                Load {
                    exec,
                    offset,
                    vaddr: s.address(),
                    filesz,
                    memsz: s.size(),
                }
            })
            .collect();
        if loads.is_empty() {
            return None;
        }
        let range = |name: &str| {
            file.section_by_name(name)
                .map(|s| s.address()..s.address().saturating_add(s.size()))
        };
        let bytes = |name: &str| -> Option<Arc<[u8]>> {
            let s = file.section_by_name(name)?;
            if s.kind() == SectionKind::UninitializedData || s.size() > MAX_SECTION {
                return None;
            }
            // Compressed sections (SHF_COMPRESSED) are not unwind data we can use.
            if s.compressed_file_range().ok()?.format != object::CompressionFormat::None {
                return None;
            }
            s.data().ok().filter(|d| !d.is_empty()).map(Arc::from)
        };
        let with_range = |name: &str| Some((range(name)?, bytes(name)?));
        let mut funcs = Vec::new();
        if with_funcs {
            for sym in file.dynamic_symbols().chain(file.symbols()) {
                if sym.kind() == SymbolKind::Text
                    && sym.address() != 0
                    && let Ok(name) = sym.name()
                {
                    funcs.push((sym.address(), sym.size(), name.to_string()));
                }
            }
            funcs.sort();
            funcs.dedup_by_key(|f| f.0);
        }
        let build_id = file
            .build_id()
            .ok()
            .flatten()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
            .unwrap_or_default();
        Some(ElfInfo {
            build_id,
            loads,
            text: range(".text"),
            got: range(".got"),
            eh_frame: with_range(".eh_frame"),
            eh_frame_hdr: with_range(".eh_frame_hdr"),
            debug_frame: bytes(".debug_frame"),
            funcs,
        })
    }

    /// The load bias (avma - svma) given one mapping of the file: its start
    /// address and file offset.
    pub fn bias_for(&self, map_start: u64, map_offset: u64) -> Option<u64> {
        let l = self.loads.iter().find(|l| {
            let first_page = l.offset & !0xfff;
            map_offset >= first_page && map_offset < l.offset.saturating_add(l.filesz.max(1))
        })?;
        // map_start is the page holding file offset map_offset, which sits
        // at vaddr + (map_offset - offset) in the segment.
        Some(
            map_start
                .wrapping_add(l.offset)
                .wrapping_sub(map_offset)
                .wrapping_sub(l.vaddr),
        )
    }

    /// The file offset and svma of the first executable PT_LOAD (where the
    /// kernel's `mm->start_code` points, plus the bias).
    pub fn first_exec_load(&self) -> Option<(u64, u64)> {
        self.loads
            .iter()
            .filter(|l| l.exec)
            .min_by_key(|l| l.vaddr)
            .map(|l| (l.offset, l.vaddr))
    }

    /// The svma range covered by all PT_LOAD segments (.bss included).
    pub fn vaddr_extent(&self) -> Range<u64> {
        let start = self.loads.iter().map(|l| l.vaddr).min().unwrap_or(0);
        let end = self
            .loads
            .iter()
            .map(|l| l.vaddr.saturating_add(l.memsz))
            .max()
            .unwrap_or(0);
        start..end
    }

    /// The function symbol containing `svma` (in-memory images only).
    pub fn func_at(&self, svma: u64) -> Option<(&str, u64)> {
        let i = self.funcs.partition_point(|f| f.0 <= svma).checked_sub(1)?;
        let (start, size, name) = &self.funcs[i];
        let off = svma - start;
        (*size == 0 || off < *size).then_some((name.as_str(), off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_executable() {
        let exe = std::env::current_exe().unwrap();
        let info = ElfInfo::from_file(&exe).expect("our own binary is ELF");
        assert!(info.eh_frame.is_some() && info.eh_frame_hdr.is_some());
        assert!(info.vaddr_extent().end > info.vaddr_extent().start);
        // rustc links with a build-id by default
        assert!(info.build_id.len() >= 16, "{:?}", info.build_id);
        assert!(ElfInfo::from_bytes(b"not an elf").is_none());
        assert!(ElfInfo::from_bytes(&[]).is_none());
    }

    #[test]
    fn bias_from_mapping() {
        let info = ElfInfo {
            loads: vec![
                Load {
                    exec: false,
                    offset: 0,
                    vaddr: 0,
                    filesz: 0x1000,
                    memsz: 0x1000,
                },
                Load {
                    exec: false,
                    offset: 0x1000,
                    vaddr: 0x1000,
                    filesz: 0x800,
                    memsz: 0x800,
                },
                Load {
                    exec: false,
                    offset: 0x2db0,
                    vaddr: 0x3db0,
                    filesz: 0x260,
                    memsz: 0x2000,
                },
            ],
            ..Default::default()
        };
        // PIE at 0x5555_0000_0000: any of its mappings gives the same bias.
        let base = 0x5555_0000_0000;
        assert_eq!(info.bias_for(base, 0), Some(base));
        assert_eq!(info.bias_for(base + 0x1000, 0x1000), Some(base));
        assert_eq!(info.bias_for(base + 0x3000, 0x2000), Some(base));
        assert_eq!(info.vaddr_extent(), 0..0x5db0);
        // Non-PIE: bias 0.
        let exec = ElfInfo {
            loads: vec![Load {
                exec: true,
                offset: 0,
                vaddr: 0x400000,
                filesz: 0x1000,
                memsz: 0x1000,
            }],
            ..Default::default()
        };
        assert_eq!(exec.bias_for(0x400000, 0), Some(0));
    }
}
