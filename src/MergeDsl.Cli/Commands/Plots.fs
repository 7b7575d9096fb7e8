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

/// Lines over categories: one point per x label (`xLabels`, evenly spaced), one line per series; each series is
/// (legend name, colour index into Category10, dashed, values per x label; NaN leaves a gap).
let lines (xLabels: string list) (series: (string * int * bool * float[]) list) (xLabel: string) (yLabel: string) (title: string) (path: string) =
    use plot = new ScottPlot.Plot()
    let palette = ScottPlot.Palettes.Category10()
    let xs = xLabels |> List.mapi (fun i _ -> float i) |> List.toArray
    for name, color, dashed, values in series do
        let points = Array.zip xs values |> Array.filter (fun (_, y) -> Double.IsFinite y)
        if points.Length > 0 then
            let line = plot.Add.Scatter(Array.map fst points, Array.map snd points)
            line.LegendText <- name
            line.Color <- palette.GetColor color
            line.LineWidth <- 2.0f
            line.MarkerSize <- 7.0f
            if dashed then line.LinePattern <- ScottPlot.LinePattern.Dashed
    let ticks = xLabels |> List.mapi (fun i l -> ScottPlot.Tick(float i, l)) |> List.toArray
    plot.Axes.Bottom.TickGenerator <- ScottPlot.TickGenerators.NumericManual(ticks)
    plot.Axes.SetLimitsX(-0.3, float (xLabels.Length - 1) + 0.3)
    plot.ShowLegend(ScottPlot.Edge.Right) |> ignore
    plot.XLabel xLabel
    plot.YLabel yLabel
    plot.Title title
    plot.SavePng(path, 1200, 600) |> ignore
