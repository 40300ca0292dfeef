"""`fastmlp datasets list|download|verify|path`: the known data sets and their local files."""
import click

from .common import data_dir_option, dataset_option, handle_errors, json_option, print_json


@click.group(name="datasets")
def command():
    """List, download, verify and locate the known data sets.

    \b
    Examples:
      fastmlp datasets list
      fastmlp datasets download mnist
      fastmlp datasets verify mnist
      fastmlp datasets path fashion-mnist

    Files are looked for in --data-dir, $FASTMLP_DATA and $XDG_CACHE_HOME/fastmlp (default
    ~/.cache/fastmlp); $FASTMLP_MIRROR replaces the download mirrors.
    """


@command.command(name="list")
@json_option("Print the list as JSON.")
@handle_errors
def list_(as_json):
    """List the known data sets.

    \b
    Example:
      fastmlp datasets list --json
    """
    from .. import datasets
    items = datasets.list_datasets()
    if as_json:
        print_json(items)
        return
    click.echo(f"{'name':<17} {'features':>8} {'classes':>7} {'train':>7} {'test':>7}  description")
    for d in items:
        click.echo(f"{d['name']:<17} {d['n_features']:>8} {d['n_classes']:>7} {d['n_train']:>7,} "
                   f"{d['n_test']:>7,}  {d['description']}")
    click.echo(f"\ndefault: {datasets.DEFAULT}; files are kept in {datasets.cache_dir()} (or $FASTMLP_DATA, "
               f"--data-dir)")


@command.command(name="download")
@click.argument("name", callback=dataset_option)
@data_dir_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def download(name, data_dir, quiet):
    """Download (or generate) a data set; print where its files are.

    \b
    Example:
      fastmlp datasets download fashion-mnist --data-dir ./data
    """
    from .. import datasets
    name = datasets.canonical_name(name)
    where = datasets.download(name, data_dir, progress=not quiet)
    if where is None:
        click.echo(f"{name} is built in: nothing to download")
    else:
        click.echo(f"{name}: files in {where}")


@command.command(name="verify")
@click.argument("name", callback=dataset_option)
@data_dir_option()
@json_option("Print the file statuses as JSON.")
@handle_errors
def verify(name, data_dir, as_json):
    """Check the local files of a data set (sizes and checksums).

    \b
    Example:
      fastmlp datasets verify mnist
    """
    from .. import datasets
    name = datasets.canonical_name(name)
    results = datasets.verify(name, data_dir)
    if as_json:
        print_json({"dataset": name, "files": [{"file": f, "status": s} for f, s in results]})
        return
    for filename, status in results:
        click.echo(f"{filename}: {status}")


@command.command(name="path")
@click.argument("name", callback=dataset_option)
@data_dir_option()
@handle_errors
def path(name, data_dir):
    """Print the directory holding a data set's files (or where they would go).

    \b
    Example:
      fastmlp datasets path mnist
    """
    from .. import datasets
    name = datasets.canonical_name(name)
    where = datasets.path(name, data_dir)
    if where is None:
        click.echo(f"note: {name} is built in: it has no files", err=True)
    else:
        click.echo(str(where))
