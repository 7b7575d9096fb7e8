/// PNG plots of benchmark tables (ScottPlot), shared by the task pools.
module MergeDsl.Cli.Commands.Plots

open System

/// Grouped bars with error bars: as `groupedBars`, each bar with the half-height in `errors` (same shape as
/// `values`; an empty list draws none), e.g. a standard deviation over seeds.
let groupedBarsWithErrors
    (groups: string list)
    (series: (string * ScottPlot.Color option) list)
    (values: float[] list)
    (errors: float[] list)
    (yLabel: string)
    (title: string)
    (yLimits: float * float)
    (path: string)
    =
    use plot = new ScottPlot.Plot()
    let palette = ScottPlot.Palettes.Category10()
    let colors = series |> List.mapi (fun i (_, c) -> c |> Option.defaultWith (fun () -> palette.GetColor i))
    let n = series.Length
    let groupWidth = float n + 2.0
    let bars = Collections.Generic.List<ScottPlot.Bar>()
    values
    |> List.iteri (fun gi row ->
        row
        |> Array.iteri (fun si v ->
            if Double.IsFinite v then
                let e = if errors.IsEmpty then 0.0 else errors[gi][si]
                bars.Add(ScottPlot.Bar(Position = float gi * groupWidth + float si, Value = v, FillColor = colors[si], Error = e))))
    plot.Add.Bars(bars) |> ignore
    series
    |> List.iteri (fun si (name, _) -> plot.Legend.ManualItems.Add(ScottPlot.LegendItem(LabelText = name, FillColor = colors[si])))
    plot.Legend.Alignment <- ScottPlot.Alignment.UpperCenter
    plot.Legend.Orientation <- ScottPlot.Orientation.Horizontal
    let ticks =
        groups
        |> List.mapi (fun gi g -> ScottPlot.Tick(float gi * groupWidth + float (n - 1) / 2.0, g))
        |> List.toArray
    plot.Axes.Bottom.TickGenerator <- ScottPlot.TickGenerators.NumericManual(ticks)
    plot.Axes.Bottom.TickLabelStyle.Rotation <- 30.0f
    plot.Axes.Bottom.TickLabelStyle.Alignment <- ScottPlot.Alignment.MiddleLeft
    plot.Axes.Bottom.MinimumSize <- 140.0f
    plot.Axes.SetLimitsY(fst yLimits, snd yLimits)
    plot.YLabel yLabel
    plot.Title title
    plot.SavePng(path, 1400, 700) |> ignore

/// Grouped bars: one group per row (`groups`), one bar per series in each group, coloured by series
/// (`seriesColors`: None takes the next colour of Category10), with a legend of the series.
let groupedBars groups series values yLabel title yLimits path =
    groupedBarsWithErrors groups series values [] yLabel title yLimits path
