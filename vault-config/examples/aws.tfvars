# AWS for a host whose agents call AWS, used with dev.tfvars:
#   -var-file=examples/dev.tfvars -var-file=examples/aws.tfvars
# Give the secret key as TF_VAR_aws_secret_key. The endpoints are unset, so
# the plugin calls AWS's own IAM and STS. This file replaces the agents map
# of dev.tfvars, because the agent dev now also gets an AWS role.
agents = {
  dev = {
    roles     = ["demo-readonly"]
    aws_roles = ["reports-read"]
  }
}

aws = {
  access_key = "AKIAIOSFODNN7EXAMPLE"
  region     = "eu-west-1"

  roles = {
    # One IAM user per call, deleted when the call ends. $${aws:username}
    # is an IAM policy variable, escaped so Terraform leaves it alone.
    reports-read = {
      credential_type = "iam_user"
      user_path       = "/agents/"
      policy_document = <<-EOT
        {
          "Version": "2012-10-17",
          "Statement": [
            {
              "Effect": "Allow",
              "Action": ["s3:GetObject", "s3:ListBucket"],
              "Resource": ["arn:aws:s3:::example-reports", "arn:aws:s3:::example-reports/*"]
            },
            {
              "Effect": "Allow",
              "Action": "iam:GetUser",
              "Resource": "arn:aws:iam::*:user/agents/$${aws:username}"
            }
          ]
        }
      EOT
    }
  }
}
