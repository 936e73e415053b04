//! Every shader passes naga's validator, and naga's reflection agrees with the host: each
//! kernel's bindings are [`Kernel::bindings`], each parameter struct lies as its WGSL twin.

use gqa_lab::gpu::kernels::{Kernel, Slot, Variant};
use gqa_lab::gpu::ops::params_layouts;
use gqa_lab::model::KvType;

/// Every kernel in every variant it is made in, for every KV cache type (the kernels that do
/// not touch the cache are the same module for each).
#[test]
fn every_shader_validates_with_naga() {
    let mut validated = 0;
    for k in Kernel::ALL {
        for kv in KvType::ALL {
            for variant in k.variants(kv) {
                assert!(k.takes(variant), "{}: {variant:?}", k.name());
                let module = parse_variant(k, variant);
                // unpack2x16float (core WGSL) is what naga files under SHADER_FLOAT16_IN_FLOAT32.
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
                )
                .validate(&module)
                .unwrap_or_else(|e| panic!("{} {variant:?}: {e:?}", k.name()));
                validated += 1;
            }
        }
    }
    assert!(validated > 3 * Kernel::ALL.len(), "{validated}");
}

/// The module of kernel `k` in its first variant for an f32 cache.
fn parse(k: Kernel) -> naga::Module {
    parse_variant(k, k.variants(KvType::F32)[0])
}

fn parse_variant(k: Kernel, variant: Variant) -> naga::Module {
    let src = k.source(variant);
    naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{} {variant:?}: {}", k.name(), e.emit_to_string(&src)))
}

/// What a WGSL global binds, in the terms of [`Slot`] (`Params` and `Step` are uniforms).
fn slot_of(v: &naga::GlobalVariable) -> &'static str {
    use naga::{AddressSpace, StorageAccess};
    match v.space {
        AddressSpace::Uniform => "uniform",
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => "read_write",
        AddressSpace::Storage { .. } => "read",
        AddressSpace::Handle => "texture",
        _ => "other",
    }
}

/// Each kernel's bindings (numbers and kinds) are those of [`Kernel::bindings`], which the
/// op constructors fill; each parameter struct's named fields lie at the offsets and have the
/// sizes of its WGSL twin, and the structs are the same size (naga's reflection).
#[test]
fn bindings_and_parameter_structs_match_the_shaders() {
    for k in Kernel::ALL {
        let module = parse(k);
        let mut found: Vec<(u32, &str)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| Some((v.binding.as_ref()?.binding, slot_of(v))))
            .collect();
        found.sort();
        let want: Vec<(u32, &str)> = k
            .bindings()
            .iter()
            .map(|&(n, slot)| {
                let kind = match slot {
                    Slot::Params | Slot::Step | Slot::Uniform => "uniform",
                    Slot::Read => "read",
                    Slot::ReadWrite => "read_write",
                    Slot::Texture => "texture",
                };
                (n, kind)
            })
            .collect();
        assert_eq!(found, want, "{}: bindings", k.name());
    }
    let mut checked = 0;
    for (wgsl, kernels, size, fields) in params_layouts() {
        for &k in kernels {
            let module = parse(k);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let (_, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(wgsl))
                .unwrap_or_else(|| panic!("{}: no struct {wgsl}", k.name()));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{}: {wgsl} is not a struct", k.name());
            };
            assert_eq!(*span as usize, size, "{}: size of {wgsl}", k.name());
            for (name, offset, bytes) in fields.iter().filter(|f| !f.0.starts_with('_')) {
                let m = members
                    .iter()
                    .find(|m| m.name.as_deref() == Some(*name))
                    .unwrap_or_else(|| panic!("{}: {wgsl} has no field {name}", k.name()));
                let at = (m.offset as usize, layouter[m.ty].size as usize);
                assert_eq!(at, (*offset, *bytes), "{}: {wgsl}.{name}", k.name());
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} fields checked");
}
