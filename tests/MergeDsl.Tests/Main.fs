module MergeDsl.Tests.Main

open Expecto
open Expecto.Impl

/// CI counts tests from one plain closing line, which Expecto does not print itself.
let private withClosingLine (printers: TestPrinters) =
    { printers with
        summary =
            fun config summary ->
                async {
                    do! printers.summary config summary
                    let failed = summary.failed.Length + summary.errored.Length
                    printfn "%d passed, %d failed" summary.passed.Length failed
                } }

[<EntryPoint>]
let main argv =
    match argv with
    | [| "--fuzz"; n |] -> MergeDsl.Tests.CheckpointFuzz.main (int n) 1
    | [| "--fuzz"; n; "--seed"; seed |] -> MergeDsl.Tests.CheckpointFuzz.main (int n) (int seed)
    | _ ->
        let config = { defaultConfig with printer = withClosingLine defaultConfig.printer }
        runTestsInAssemblyWithCLIArgs [ CLIArguments.Printer config.printer; CLIArguments.No_Spinner ] argv
