/// The `--decoding greedy|scmoe` options `generate` and `score` share: SCMoE self-contrast settings, checked
/// before any model is read.
module MergeDsl.Cli.Commands.ContrastArgs

open System
open MergeDsl.Core.Models.Decoder
open MergeDsl.Core.Moe.Sparse
open MergeDsl.Core.Moe.Sparse.Contrast
open MergeDsl.Cli.Jobs.Failure

/// What `--decoding` asked for.
type Decoding =
    /// The model as it is (its own routing).
    | Greedy
    /// Self-contrast; completed with the model (its own routing is the default strong one).
    | Scmoe of (DecoderModel -> SelfContrastSettings)

let private routing (command: string) (option: string) (text: string) =
    try RoutingPolicy.Parse text
    with
    | :? FormatException as e -> raise (UsageError $"{command}: {option}: {e.Message}")
    | :? ArgumentException as e -> raise (UsageError $"{command}: {option}: {e.Message}")

/// Reads the options (the strong routing defaults to the model's current one, i.e. `--routing` when given); `defaultAlpha` differs between generation (SCMoE's 0.1) and scoring (0: every token plausible).
let parse (command: string) (decoding: string option) (beta: float option) (alpha: float option)
          (strong: string option) (weak: string option) (defaultAlpha: float) : Decoding =
    match decoding |> Option.map (fun d -> d.Trim().ToLowerInvariant()) with
    | None
    | Some "greedy" ->
        if beta.IsSome || alpha.IsSome || strong.IsSome || weak.IsSome then
            raise (UsageError $"{command}: --beta, --alpha, --strong and --weak need --decoding scmoe")
        Greedy
    | Some "scmoe" ->
        let b = defaultArg beta 0.5
        let a = defaultArg alpha defaultAlpha
        try SelfContrast.Validate(b, a) with :? ArgumentException as e -> raise (UsageError $"{command}: {e.Message}")
        let s = strong |> Option.map (routing command "--strong")
        let w = routing command "--weak" (defaultArg weak "top-k:1")
        Scmoe(fun model ->
            let blocks = SparseMoe.Blocks model
            if blocks.Count = 0 then
                raise (UsageError $"{command}: {model.Label}: {model.Config.Family.Architecture()} is a dense model; --decoding scmoe needs sparse MoE layers")
            let settings = SelfContrastSettings(defaultArg s blocks[0].Routing, w, b, a)
            try settings.Validate(blocks |> Seq.map (fun x -> x.NumExperts) |> Seq.min)
            with :? ArgumentException as e -> raise (UsageError $"{command}: {e.Message}"))
    | Some other -> raise (UsageError $"{command}: --decoding '{other}' is not greedy or scmoe")
