namespace MergeDsl

/// The toolkit's version, as stamped into merged models' metadata.
module Version =
    /// The version, "major.minor.patch"; the packages' version (Directory.Build.props) is the same.
    [<Literal>]
    let Current = "0.1.0"
