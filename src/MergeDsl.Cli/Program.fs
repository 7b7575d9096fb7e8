module MergeDsl.Cli.Program

[<EntryPoint>]
let main argv =
    printfn "mergedsl %s" MergeDsl.Version.Current
    0
