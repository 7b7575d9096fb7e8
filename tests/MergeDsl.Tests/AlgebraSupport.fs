/// Helpers shared by the algebra, golden, law, compiler and executor tests.
module MergeDsl.Tests.AlgebraSupport

open System.Collections.Generic
open Expecto
open TorchSharp
open MergeDsl.Core.Checkpoints
open MergeDsl.Core.Compilation
open MergeDsl.Core.Execution
open MergeDsl.Core.Ir

do MergeDsl.Core.Torch.TorchRuntime.EnsureLoadable() |> ignore

/// A float32 tensor of the given values and shape.
let tensor (shape: int64 list) (xs: float32 list) : torch.Tensor =
    torch.tensor(Array.ofList xs).reshape(Array.ofList shape)

/// A 1-D float32 tensor.
let vec (xs: float list) = tensor [ int64 xs.Length ] [ for x in xs -> float32 x ]

/// The values of a tensor as float32.
let values (t: torch.Tensor) : float32[] =
    use c = t.``to``(torch.ScalarType.Float32).cpu().contiguous()
    c.data<float32>().ToArray()

/// An in-memory model from (name, tensor) pairs. The tensors live as long as the test process.
let model (label: string) (tensors: (string * torch.Tensor) list) : NamedSource =
    let d = Dictionary<string, torch.Tensor>()
    for (n, t) in tensors do d[n] <- t
    NamedSource(label, new InMemorySource(label, d))

/// Inputs with a base and experts.
let inputs (baseModel: NamedSource option) (experts: NamedSource list) =
    MergeInputs((match baseModel with Some b -> b | None -> Unchecked.defaultof<_>), Array.ofList experts)

/// Compiles and executes a recipe into memory; returns name -> values.
let runWith (options: MergeOptions) (recipe: MergeRecipe) (ins: MergeInputs) : Map<string, float32[]> =
    let plan = Compiler.Compile(recipe, ins)
    use sink = new MemorySink()
    Executor.Run(plan, sink, options) |> ignore
    sink.Tensors |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq

/// Compiles and executes with default options.
let run recipe ins = runWith MergeOptions.Default recipe ins

/// Evaluates with the naive reference interpreter.
let reference (options: MergeOptions) (recipe: MergeRecipe) (ins: MergeInputs) : Map<string, float32[]> =
    let r = ReferenceInterpreter.Run(recipe, ins, options)
    let m = r |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq
    for t in r.Values do t.Dispose()
    m

/// Element-wise closeness with an absolute + relative tolerance.
let close (tol: float32) (expected: float32[]) (actual: float32[]) =
    expected.Length = actual.Length
    && Array.forall2 (fun (e: float32) (a: float32) -> abs (e - a) <= tol * (1.0f + abs e) || (System.Single.IsNaN e && System.Single.IsNaN a)) expected actual

/// Expect element-wise closeness.
let expectClose (tol: float32) (actual: float32[]) (expected: float32[]) msg =
    if not (close tol expected actual) then
        failtestf "%s: expected %A, got %A" msg expected actual

/// Bitwise equality (NaN equals NaN).
let sameBits (a: float32[]) (b: float32[]) =
    a.Length = b.Length
    && Array.forall2 (fun (x: float32) (y: float32) -> System.BitConverter.SingleToInt32Bits x = System.BitConverter.SingleToInt32Bits y || (x = y)) a b

/// Raises unless f throws a RecipeException whose message contains every fragment; returns the message.
let expectRecipeError (fragments: string list) (f: unit -> unit) =
    let msg =
        try
            f ()
            failtest "expected a RecipeException"
            ""
        with :? RecipeException as e -> e.Message
    for fr in fragments do
        Expect.stringContains msg fr $"message '{msg}'"
    Expect.isFalse (msg.Contains "\n") "one line"
    msg

/// Deterministic small random vectors.
let randomVec (rng: System.Random) (n: int) =
    [ for _ in 1..n -> float (rng.Next(-40, 41)) / 8.0 ]
