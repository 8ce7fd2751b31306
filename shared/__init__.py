"""What the API and the workers share: settings, request and response models, the job store, the task queue."""
