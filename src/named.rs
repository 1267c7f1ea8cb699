//! `named!`: enums whose variants have fixed short names (contrasts, labels, sites, recipes,
//! methods). One mechanism gives each the same edges: `Display` writes the name, `FromStr`
//! parses it with an error listing the known names, and serde reads and writes the name, so
//! TOML, JSON and the command line all use it and nothing inside passes the string around.
//! Values are ordered by name, so a map keyed by them serialises in the order its string keys
//! would. Must not hold any enum itself: each lives with the module that owns it.

/// Define a named enum: `named! { /// doc  pub enum Site("component") { /// doc  ResidPre = "resid_pre", ... } }`.
/// The string after the type name says what a value is, for the parse error
/// ("unknown component 'x' (known: resid_pre, ...)").
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $T:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $V:ident = $name:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $T {
            $( $(#[$vmeta])* $V ),+
        }

        impl $T {
            /// Every value, in declaration order.
            pub const ALL: &'static [$T] = &[$($T::$V),+];
            /// The short name (as on the command line and in files).
            pub fn name(self) -> &'static str {
                match self {
                    $($T::$V => $name),+
                }
            }
        }

        impl Ord for $T {
            fn cmp(&self, other: &$T) -> std::cmp::Ordering {
                self.name().cmp(other.name())
            }
        }

        impl PartialOrd for $T {
            fn partial_cmp(&self, other: &$T) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl std::fmt::Display for $T {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $T {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<$T> {
                $T::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let known: Vec<&str> = $T::ALL.iter().map(|v| v.name()).collect();
                    $crate::Error::input(format!(
                        "unknown {} '{}' (known: {})",
                        $what,
                        s,
                        known.join(", ")
                    ))
                })
            }
        }

        impl serde::Serialize for $T {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $T {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<$T, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
