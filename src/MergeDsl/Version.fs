namespace MergeDsl

/// The toolkit's version, as stamped into merged models' metadata.
module Version =
    [<Literal>]
    let Current = "0.1.0"
