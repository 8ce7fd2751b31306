"""convq: submit correlations and kernel trainings to a convq API, follow them, list and cancel jobs.

Exit codes, for scripts:
  0    success
  1    the job failed or was cancelled (commands that wait for a job: --wait, edges)
  2    usage error: bad options, or a matrix file that cannot be read or holds no matrix
  3    the API refused the request (4xx: its title, detail and each fault's loc: msg go to stderr)
  4    the server could not be reached, or answered 5xx
  130  interrupted (Ctrl-C while waiting leaves the job running and says how to cancel it)
"""

import typing
from dataclasses import dataclass
from pathlib import Path

import click

from cli import render
from cli.matrices import KernelFile, KernelName, MatrixFile, PairType
from client import ApiError, Client, Job, ServerUnreachable
from client.models import JobKind, JobStatus

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


def _json_flag(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.obj.json = True


json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_json_flag, help="Print plain JSON on stdout, for scripts."
)
wait_option = click.option("--wait", is_flag=True, help="Wait for the job to finish and show its result.")


@click.group(cls=ConvqGroup, epilog="\b\n" + __doc__[__doc__.index("Exit codes") :])
@click.option("--url", envvar="CONVQ_URL", default="http://127.0.0.1:8000", show_default=True, show_envvar=True)
@click.option("--api-key", envvar="CONVQ_API_KEY", show_envvar=True, help="Sent as Authorization: Bearer <key>.")
@click.option("--json", "as_json", is_flag=True, help="Print plain JSON on stdout, for scripts.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, as_json: bool) -> None:
    """Run 2-D cross-correlations and kernel trainings on a convq server."""
    ctx.obj = Session(ctx.with_resource(Client(url, api_key)), as_json)


@cli.command()
@click.option("-i", "--input", "input_", type=MatrixFile(), required=True, help="Input matrix: .json, .csv or .npy.")
@click.option("-k", "--kernel", type=KernelFile(), required=True, help="Kernel matrix file, or a kernel's name.")
@click.option("--padding", type=PairType(), help="Zero padding.")
@click.option("--stride", type=PairType(), help="Step of the window.")
@click.option("--bias", type=float, help="Added to every output element.")
@wait_option
@json_option
@click.pass_obj
def correlate(session: Session, input_, kernel, padding, stride, bias: float | None, wait: bool) -> None:
    """Cross-correlate a matrix with a kernel: a file, or a name such as sobel-x."""
    job = session.client.correlate(
        input_,
        session.kernel(kernel),
        padding=padding,
        stride=stride,
        bias=bias,
        wait=SUBMIT_WAIT_SECONDS if wait else None,
    )
    _conclude(session, _follow(session, job) if wait else job)


@cli.command()
@click.option("-i", "--input", "input_", type=MatrixFile(), required=True, help="X, the input matrix.")
@click.option("--target", type=MatrixFile(), help="Y, the output to reproduce (with --kernel-size).")
@click.option("--kernel-size", type=PairType(), help="Size of the kernel to learn (with --target).")
@click.option("--target-kernel", type=KernelFile(), help="K*: the server makes Y = corr2d(X, K*). A file or a name.")
@click.option("--epochs", type=int, help="Iterations of gradient descent [server's default: 20].")
@click.option("--lr", type=float, help="Learning rate [server's default: 0.03].")
@click.option("--bias", is_flag=True, help="Learn a scalar bias too.")
@click.option("--seed", type=int, help="Seed of the initial kernel [server's default: 0].")
@wait_option
@json_option
@click.pass_obj
def train(session: Session, input_, target, kernel_size, target_kernel, epochs, lr, bias, seed, wait) -> None:
    """Learn a kernel by gradient descent; with --wait, follow it on a live progress bar."""
    if (target is None) == (target_kernel is None):
        raise click.UsageError("give either --target (with --kernel-size) or --target-kernel")
    if target is not None and kernel_size is None:
        raise click.UsageError("--target needs --kernel-size")
    job = session.client.train(
        input_,
        target=target,
        target_kernel=None if target_kernel is None else session.kernel(target_kernel, "--target-kernel"),
        kernel_size=kernel_size,
        lr=lr,
        epochs=epochs,
        bias=bias or None,
        seed=seed,
    )
    _conclude(session, _follow(session, job, bar=True) if wait else job)


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("-k", "--kernel", type=KernelFile(), default="edge", show_default=True, help="Kernel name or file.")
@json_option
@click.pass_obj
def edges(session: Session, image: Path, output: Path, kernel) -> None:
    """Find the edges in a PNG or JPEG image and save them as a PNG."""
    # base64: the output (as big as the image) comes back in half the bytes of lists, and decodes at once
    upload = session.client.correlate_image(
        image, session.kernel(kernel), result_format="base64", wait=SUBMIT_WAIT_SECONDS
    )
    job = _follow(session, upload)
    if job.status == "succeeded":
        output.write_bytes(session.client.output_png(job.id))
    _conclude(session, job, result=False)
    if not session.json:
        height, width = job.result.output.shape
        render.out.print(f"wrote {output}, {width} x {height} pixels", markup=False)


@cli.command("jobs")
@click.option("--status", type=click.Choice(typing.get_args(JobStatus)), help="Only jobs with this status.")
@click.option("--kind", type=click.Choice(typing.get_args(JobKind)), help="Only jobs of this kind.")
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
