"""convq: submit correlations and kernel trainings to a convq API, follow them, list and cancel jobs.

Exit codes, for scripts:
  0    success
  1    the job failed or was cancelled (commands that wait for a job: --wait, edges)
  2    usage error: bad options, or a matrix or pairs file that cannot be read or holds no array or pairs
  3    the API refused the request (4xx: its title, detail and each fault's loc: msg go to stderr)
  4    the server could not be reached, or answered 5xx
  130  interrupted (Ctrl-C while waiting leaves the job running and says how to cancel it)
"""

import typing
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from cli import render
from cli.matrices import KERNEL_SHAPE, PAIR, KernelFile, KernelName, MatrixFile, NumberType, PairsFile
from client import ApiError, Client, Job, ServerUnreachable
from client.models import Device, JobKind, JobStatus, Loss, Optimizer

JOB_FAILED, REFUSED, UNAVAILABLE, INTERRUPTED = 1, 3, 4, 130
# Prefer: wait on a submission: a small job answers finished in one round trip; a longer one is then
# followed on its event stream, where Ctrl-C can still name the job.
SUBMIT_WAIT_SECONDS = 2


@dataclass
class Session:
    client: Client
    json: bool

    def kernel(self, value, option: str = "--kernel"):
        """A kernel option's matrix: the file's, or the named kernel's from the server."""
        if not isinstance(value, KernelName):
            return value
        kernels = {kernel.name: kernel.matrix for kernel in self.client.kernels()}
        if value not in kernels:
            message = f"no kernel is named {value!r}; the server has {', '.join(kernels)}"
            raise click.BadParameter(message, param_hint=f"'{option}'")
        return kernels[value]


class ConvqGroup(click.Group):
    """Turns the client's errors and Ctrl-C into the documented exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ApiError as error:
            render.show_problem(error.problem)
            raise click.exceptions.Exit(REFUSED if error.status < 500 else UNAVAILABLE) from None
        except ServerUnreachable as error:
            render.err.print(f"error: {error}", markup=False)
            raise click.exceptions.Exit(UNAVAILABLE) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(INTERRUPTED) from None


def _choice(literal) -> click.Choice:
    """The values of a Literal type as a click choice."""
    return click.Choice(typing.get_args(literal))


def _json_flag(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.obj.json = True


json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_json_flag, help="Print plain JSON on stdout, for scripts."
)
wait_option = click.option("--wait", is_flag=True, help="Wait for the job to finish and show its result.")
device_option = click.option(
    "--device",
    type=_choice(Device),
    help="Workers to run on: auto sends big jobs to GPU workers, if the server has them [server's default: auto].",
)


def _npy_output(what: str):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Wait for the job and write {what} to this .npy file (float32).",
    )


@click.group(cls=ConvqGroup, epilog="\b\n" + __doc__[__doc__.index("Exit codes") :])
@click.option("--url", envvar="CONVQ_URL", default="http://127.0.0.1:8000", show_default=True, show_envvar=True)
@click.option("--api-key", envvar="CONVQ_API_KEY", show_envvar=True, help="Sent as Authorization: Bearer <key>.")
@click.option("--json", "as_json", is_flag=True, help="Print plain JSON on stdout, for scripts.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, as_json: bool) -> None:
    """Run cross-correlations (of matrices, or with channels) and kernel trainings on a convq server."""
    ctx.obj = Session(ctx.with_resource(Client(url, api_key)), as_json)


@cli.command()
@click.option(
    "-i", "--input", "input_", type=MatrixFile(), required=True, help="H x W or C x H x W: .json, .npy or (2-D) .csv."
)
@click.option(
    "-k", "--kernel", type=KernelFile(), required=True, help="kh x kw, C x kh x kw or O x C x kh x kw file; or a name."
)
@click.option("--padding", type=PAIR, help="Zero padding.")
@click.option("--stride", type=PAIR, help="Step of the window.")
@click.option("--bias", type=NumberType(many=True), help="Added to the output; 1,0,-1: one per output channel.")
@device_option
@wait_option
@_npy_output("its output")
@json_option
@click.pass_obj
def correlate(
    session: Session, input_, kernel, padding, stride, bias, device: str | None, wait: bool, output: Path | None
) -> None:
    """Cross-correlate a matrix (or an input with channels) with a kernel: a file, or a name such as sobel-x.

    Arrays of 64K elements or more travel as .npy files, both ways with -o.
    """
    wait = wait or output is not None
    job = session.client.correlate(
        input_,
        session.kernel(kernel),
        padding=padding,
        stride=stride,
        bias=bias,
        device=device,
        wait=SUBMIT_WAIT_SECONDS if wait else None,
    )
    job = _follow(session, job) if wait else job
    _save(session, job, output, session.client.output_npy)
    _conclude(session, job, result=output is None)


@cli.command()
@click.option("-i", "--input", "input_", type=MatrixFile(), help="X, the input: H x W or C x H x W.")
@click.option("--target", type=MatrixFile(), help="Y, the output to reproduce from --input.")
@click.option(
    "--pairs",
    type=PairsFile(),
    help='Several examples instead of -i: .json [{"input", "target"}, ...], or .npz with arrays inputs and targets.',
)
@click.option("--target-kernel", type=KernelFile(), help="K*: the server makes each Y = corr2d(X, K*); a file or name.")
@click.option("--kernel-size", type=PAIR, help="kh x kw of the kernel to learn; its channels follow X's and Y's.")
@click.option("--kernel-shape", type=KERNEL_SHAPE, help="The kernel's whole shape instead: 3x3, 2x3x3 or 1x2x3x3.")
@click.option("--epochs", type=int, help="Passes over the examples [server's default: 20].")
@click.option("--lr", type=NumberType(), help="Learning rate [server's default: 0.03].")
@click.option("--optimizer", type=_choice(Optimizer), help="The update rule [server's default: sgd].")
@click.option("--momentum", type=NumberType(), help="The momentum of --optimizer momentum [server's default: 0.9].")
@click.option("--loss", type=_choice(Loss), help="Of the squared errors [server's default: sum].")
@click.option("--tolerance", type=NumberType(), help="Stop after the first epoch whose loss is below this.")
@click.option("--batch-size", type=int, help="Examples per step [server's default: all of them].")
@click.option("--shuffle", is_flag=True, help="Take the examples in a new order every epoch.")
@click.option("--bias", is_flag=True, help="Learn a bias too (one per output channel).")
@click.option("--seed", type=int, help="Seed of the initial kernel and the shuffles [server's default: 0].")
@device_option
@wait_option
@_npy_output("the learned kernel")
@json_option
@click.pass_obj
def train(session: Session, input_, target, pairs, target_kernel, wait: bool, output: Path | None, **options) -> None:
    """Learn a kernel by gradient descent; with --wait, follow it on a live progress bar."""
    wait = wait or output is not None
    if (input_ is None) == (pairs is None):
        raise click.UsageError("give either -i/--input or --pairs")
    if pairs is not None and target is not None:
        raise click.UsageError("--target goes with --input: with --pairs, each pair holds its target")
    if input_ is not None and (target is None) == (target_kernel is None):
        raise click.UsageError("give either --target (with --kernel-size) or --target-kernel")
    if target_kernel is None and options["kernel_size"] is None and options["kernel_shape"] is None:
        raise click.UsageError("without --target-kernel, give --kernel-size (or --kernel-shape)")
    job = session.client.train(
        input_,
        pairs=pairs,
        target=target,
        target_kernel=None if target_kernel is None else session.kernel(target_kernel, "--target-kernel"),
        **options,
    )
    job = _follow(session, job, bar=True) if wait else job
    _save(session, job, output, session.client.kernel_npy)
    _conclude(session, job, result=output is None)


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("-k", "--kernel", type=KernelFile(), default="edge", show_default=True, help="Kernel name or file.")
@device_option
@json_option
@click.pass_obj
def edges(session: Session, image: Path, output: Path, kernel, device: str | None) -> None:
    """Find the edges in a PNG or JPEG image and save them as a PNG (an O x 1 x kh x kw kernel: O side by side)."""
    # base64: the output (as big as the image) comes back in half the bytes of lists, and decodes at once
    upload = session.client.correlate_image(
        image, session.kernel(kernel), device=device, result_format="base64", wait=SUBMIT_WAIT_SECONDS
    )
    job = _follow(session, upload)
    if job.status == "succeeded":
        output.write_bytes(session.client.output_png(job.id))
    _conclude(session, job, result=False)
    if not session.json:
        *channels, height, width = job.result.output.shape
        pixels = f"{width} x {height} pixels"
        what = f"{channels[0]} channels of {pixels} side by side" if channels else pixels
        render.out.print(f"wrote {output}, {what}", markup=False)


@cli.command("jobs")
@click.option("--status", type=_choice(JobStatus), help="Only jobs with this status.")
@click.option("--kind", type=_choice(JobKind), help="Only jobs of this kind.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@json_option
@click.pass_obj
def list_jobs(session: Session, status: str | None, kind: str | None, limit: int) -> None:
    """List your jobs, newest first."""
    jobs = list(session.client.jobs(status=status, kind=kind, limit=limit))
    if session.json:
        click.echo(render.to_json(jobs))
    else:
        render.out.print(render.jobs_table(jobs))


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def show(session: Session, job_id: str) -> None:
    """Show a job: its status, progress, and result or error."""
    job = session.client.job(job_id)
    if session.json:
        click.echo(render.to_json(job))
    else:
        render.show_job(job)


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def cancel(session: Session, job_id: str) -> None:
    """Cancel a job (a running training stops within an epoch)."""
    job = session.client.cancel(job_id)
    if session.json:
        click.echo(render.to_json(job))
    elif job.status == "running":
        render.out.print(f"job {job.id} is stopping (within an epoch)")
    elif job.status == "cancelled":
        render.out.print(f"job {job.id} cancelled")
    else:
        render.out.print(f"job {job.id} had already finished: {job.status}")


def _follow(session: Session, job: Job, bar: bool = False) -> Job:
    """Wait for the job to finish, with a progress bar if asked and stdout is a terminal; Ctrl-C leaves it running."""
    if job.finished:
        return job
    try:
        if bar and render.out.is_terminal and not session.json:
            return render.follow_with_bar(session.client.events(job.id))
        return session.client.wait(job.id)
    except KeyboardInterrupt:
        render.err.print(
            f"stopped waiting; job {job.id} goes on. See it with `convq show {job.id}`, "
            f"cancel it with `convq cancel {job.id}`",
            markup=False,
        )
        raise


def _save(session: Session, job: Job, output: Path | None, read) -> None:
    """Write the succeeded job's array, read as .npy by `read`, to `output` (if asked)."""
    if output is None or job.status != "succeeded":
        return
    array = read(job.id)
    np.save(output, array, allow_pickle=False)
    if not session.json:
        render.out.print(f"wrote {output}, {' x '.join(map(str, array.shape))} float32", markup=False)


def _conclude(session: Session, job: Job, result: bool = True) -> None:
    """Print the job (just submitted, or finished with its result); exit 1 if it failed or was cancelled."""
    if session.json:
        click.echo(render.to_json(job))
    elif not job.finished:
        render.out.print(f"job {job.id} {job.status}; see it with `convq show {job.id}`", markup=False)
    else:
        render.out.print(f"job {job.id} {job.status}", markup=False)
        if result:
            render.show_result(job)
    if job.error is not None:
        render.show_problem(job.error, f"job {job.id} failed")
    if job.status in ("failed", "cancelled"):
        raise click.exceptions.Exit(JOB_FAILED)


def main() -> None:
    cli(prog_name="convq")
